"""``pip install`` of the repository: the wheel it builds holds the whole ``scheduler_app``
package (templates, static files, migrations, ``py.typed``) and nothing else at the top level,
declares the runtime dependencies, and works from a virtualenv of its own, away from the repo.

The wheel is built offline (``--no-build-isolation``, with requirements-dev.txt's setuptools)
from a copy of the files git knows, so the build leaves no ``build/`` or ``*.egg-info`` in the
work tree and a stray untracked file cannot ship.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from scheduler_app.migrations import head
from scheduler_app.version import __version__
from tests.servers import REPO

# What a host app needs from PyPI, whatever else it uses (gunicorn and psycopg are extras).
CORE_REQUIREMENTS = {"flask", "apscheduler", "sqlalchemy", "pydantic", "flask-apscheduler"}
OPTIONAL_REQUIREMENTS = {"gunicorn", "psycopg"}
BUILD_TIMEOUT = 60


def repo_files() -> list[str]:
    """The files a clone has, plus new ones not committed yet (ignored files left out)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True, text=True).stdout
    return sorted(name for name in out.split("\0") if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip install <repository>`` would build and install."""
    tmp = tmp_path_factory.mktemp("packaging")
    source, dist = tmp / "source", tmp / "dist"
    for name in repo_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", "--wheel-dir", str(dist), str(source)],
        cwd=tmp, check=True, timeout=BUILD_TIMEOUT)
    (built,) = dist.glob("*.whl")
    return built


def requirement_name(requirement: str) -> str:
    """``flask-apscheduler`` from ``Flask_APScheduler<2,>=1.13``."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[._-]+", "-", match.group()).lower()


def test_wheel_holds_the_package_and_only_it(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(
            archive.read(f"{dist_info}/METADATA").decode())

    assert {name.split("/")[0] for name in names} == {"scheduler_app", dist_info}
    shipped = [name for name in repo_files() if name.startswith("scheduler_app/")]
    assert sorted(set(shipped) - names) == []
    # The data files by kind, so an empty listing cannot pass the check above vacuously.
    for prefix in ("scheduler_app/dashboard/templates/dashboard/",
                   "scheduler_app/dashboard/static/",
                   "scheduler_app/migrations/versions/"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert {"scheduler_app/py.typed", "scheduler_app/migrations/env.py",
            "scheduler_app/dashboard/templates/dashboard/base.html"} <= names

    assert metadata["Name"] == "scheduler-app"
    assert metadata["Version"] == __version__
    required = {requirement_name(r) for r in metadata.get_all("Requires-Dist", [])
                if "extra ==" not in r}
    assert CORE_REQUIREMENTS <= required
    assert not OPTIONAL_REQUIREMENTS & required


def test_installed_wheel_works_away_from_the_repo(wheel: Path, tmp_path: Path) -> None:
    """Installed alone into a fresh virtualenv, the package imports from there and finds its
    templates and migrations; its dependencies come from the project's venv, appended to
    ``sys.path`` after the fresh venv's own site-packages so they cannot shadow the install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=BUILD_TIMEOUT)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-index", "--no-deps", str(wheel)],
        check=True, timeout=BUILD_TIMEOUT)

    probe = f"""
import importlib.resources, json, sys
sys.path.append({sysconfig.get_path("purelib")!r})
import scheduler_app
from scheduler_app.migrations import head
from scheduler_app.version import __version__
package = importlib.resources.files("scheduler_app.dashboard")
print(json.dumps({{
    "file": scheduler_app.__file__,
    "version": __version__,
    "templates": sorted(p.name for p in (package / "templates" / "dashboard").iterdir()),
    "static": sorted(p.name for p in (package / "static").iterdir()),
    "head": head(),
}}))
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)

    assert Path(found["file"]).is_relative_to(venv)
    assert found["version"] == __version__
    files = repo_files()
    for kind, folder in (("templates", "scheduler_app/dashboard/templates/dashboard/"),
                         ("static", "scheduler_app/dashboard/static/")):
        assert found[kind] == [name.removeprefix(folder) for name in files
                               if name.startswith(folder)], kind
    assert found["head"] == head()
