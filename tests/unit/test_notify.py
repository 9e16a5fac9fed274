"""The wake-up transport (``store.notify``) on its own: real UNIX sockets beside a real SQLite
file, real LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

import queue
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.store.notify import LocalSignals, NoSignals, PgSignals, signals_for


def listener(signals, member: str) -> queue.Queue[str]:
    heard: queue.Queue[str] = queue.Queue()
    signals.listen(member, heard.put)
    return heard


def test_local_signals_reach_every_other_listener_but_not_the_sender(tmp_path: Path):
    folder = str(tmp_path / "db.sqlite3.wakeups")
    a, b, c = LocalSignals(folder), LocalSignals(folder), LocalSignals(folder)
    try:
        heard_a, heard_b = listener(a, "node-a"), listener(b, "node-b")
        a.send("runs node-a")
        assert heard_b.get(timeout=2) == "runs node-a"
        c.send("cancel web 7")  # a sender that does not listen (a web node)
        assert heard_a.get(timeout=2) == "cancel web 7"
        assert heard_b.get(timeout=2) == "cancel web 7"
        assert heard_a.empty()  # its own message never came back
    finally:
        for signals in (a, b, c):
            signals.close()
    assert not list(Path(folder).glob("*.sock")), "a stopped listener left its socket"


def test_local_signals_work_beyond_the_socket_path_limit(tmp_path: Path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    folder = str(deep / "scheduler.sqlite3.wakeups")
    assert len(folder) > 108
    a, b = LocalSignals(folder), LocalSignals(folder)
    try:
        heard = listener(b, "node-b")
        a.send("runs node-a")
        assert heard.get(timeout=2) == "runs node-a"
    finally:
        a.close()
        b.close()


def test_a_dead_nodes_socket_is_removed_and_the_others_still_hear(tmp_path: Path):
    folder = tmp_path / "w"
    folder.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(folder / "dead.sock"))
    dead.close()  # its process gone: the file stays, nobody reads it
    a, b = LocalSignals(str(folder)), LocalSignals(str(folder))
    try:
        heard = listener(b, "node-b")
        a.send("runs node-a")
        assert heard.get(timeout=2) == "runs node-a"
        assert not (folder / "dead.sock").exists()
    finally:
        a.close()
        b.close()


def test_sending_before_any_node_listens_is_a_no_op(tmp_path: Path):
    LocalSignals(str(tmp_path / "nobody-yet")).send("runs x")


def test_the_transport_follows_the_database_and_the_setting(tmp_path: Path, pg_url: str):
    sqlite_db = Database(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    pg_db = Database(pg_url)
    try:
        local = signals_for(sqlite_db, True)
        assert isinstance(local, LocalSignals)
        assert local.folder == f"{tmp_path / 'a.sqlite3'}.wakeups"
        assert isinstance(signals_for(pg_db, True), PgSignals)
        assert isinstance(signals_for(pg_db, False), NoSignals)
        assert isinstance(signals_for(sqlite_db, False), NoSignals)
    finally:
        sqlite_db.dispose()
        pg_db.dispose()


def test_pg_notify_is_heard_and_a_dropped_listener_reconnects(pg_url: str):
    db = Database(pg_url)
    a, b = PgSignals(db), PgSignals(db)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        heard = listener(b, "node-b")
        assert b.connected.wait(5)
        assert heard.get(timeout=2) == "hello"  # (re)connected: look at the queue once
        a.send("runs node-a")
        assert heard.get(timeout=2) == "runs node-a"
        with admin.connect() as conn:
            dropped = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'")).all()
        assert dropped
        assert heard.get(timeout=10) == "hello"  # back, after its backoff
        a.send("cancel node-a 3")
        assert heard.get(timeout=2) == "cancel node-a 3"
    finally:
        a.close()
        b.close()
        admin.dispose()
        db.dispose()


def test_a_failed_send_is_logged_never_raised(caplog: pytest.LogCaptureFixture):
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        PgSignals(db).send("runs x")
    finally:
        db.dispose()
    assert "could not send wake-up" in caplog.text


def test_pg_a_message_sent_in_a_transaction_arrives_at_its_commit_and_never_on_rollback(
        pg_url: str):
    db = Database(pg_url)
    a, b = PgSignals(db), PgSignals(db)
    try:
        heard = listener(b, "node-b")
        assert b.connected.wait(5)
        assert heard.get(timeout=2) == "hello"
        with db.engine.connect() as conn:
            with conn.begin() as tx:
                assert a.send_in(conn, "runs node-a 1 demo.echo")
                tx.rollback()
            with conn.begin():
                assert a.send_in(conn, "runs node-a 2 demo.echo")
                with pytest.raises(queue.Empty):  # not before the commit
                    heard.get(timeout=0.3)
        assert heard.get(timeout=2) == "runs node-a 2 demo.echo"
        with pytest.raises(queue.Empty):  # the rolled-back one never came
            heard.get(timeout=0.3)
    finally:
        a.close()
        b.close()
        db.dispose()


def test_local_and_disabled_transports_send_after_the_commit(tmp_path: Path):
    """A datagram cannot wait for a commit: these decline, and the caller sends afterwards."""
    for signals in (LocalSignals(str(tmp_path / "w")), NoSignals()):
        assert signals.send_in(None, "runs x") is False  # type: ignore[arg-type]
