"""``flask --app wsgi db upgrade|current``: the database schema, by hand.

By default every process upgrades the schema when it starts (``SCHEMA_AUTO_UPGRADE``), so
loading the app for these commands has already done it and ``db upgrade`` reports the result.
With ``SCHEMA_AUTO_UPGRADE=false`` nothing migrates by itself and ``db upgrade`` is the deploy
step, taking the same lock the workers would.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from . import migrations
from .services import services

db_cli = AppGroup("db", help="The database schema: upgrade it, show its revision.")


@db_cli.command("upgrade")
def upgrade() -> None:
    """Upgrade the database schema to this code's newest revision."""
    before, after = services().store.db.migrate()
    if after != migrations.head():
        click.echo(f"{after}: newer than this code's newest revision ({migrations.head()}); "
                   "left as it is")
    elif before == after:
        click.echo(f"{after} (head): already up to date")
    else:
        click.echo(f"{after} (head): upgraded from {before or 'an empty database'}")


@db_cli.command("current")
def current() -> None:
    """Show the database's schema revision and whether this code needs an upgrade."""
    revision, head = services().store.db.schema_revision(), migrations.head()
    if revision == head:
        click.echo(f"{revision} (head)")
    elif revision is None:
        click.echo(f"none: the database was never migrated (head is {head}); "
                   "run 'flask --app wsgi db upgrade'")
    elif migrations.is_known(revision):
        click.echo(f"{revision}: behind head {head}; run 'flask --app wsgi db upgrade'")
    else:
        click.echo(f"{revision}: newer than this code's newest revision ({head})")
