"""A real PostgreSQL server for the tests: the Debian package's binaries, a fresh cluster in
a temporary folder, TCP on 127.0.0.1 at a free port, trust authentication, stopped after.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to the
``postgres`` user (the Debian package creates it) and every server command runs through
``runuser -u postgres``. Without the binaries (``apt-get install postgresql``, which
``.ci/run`` does) or the driver (``psycopg[binary]``, psycopg 3, which SQLAlchemy 2.1 uses
for ``postgresql://``; a test extra) the tests skip."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, or the PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


def missing() -> str | None:
    """Why a server cannot be started here, or None."""
    if pg_bin() is None:
        return "PostgreSQL's server binaries are not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres(database: str = "mlflow"):
    """Start a server; yield ``postgresql://aerestore@127.0.0.1:<port>/<database>``."""
    import psycopg

    bindir = pg_bin()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="aerestore-pg-"))
    if os.geteuid() == 0:  # the server refuses root: run it as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "aerestore", "--auth=trust", "-E", "UTF8",
        "--no-sync", "--no-instructions")
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=100"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="aerestore", dbname="postgres",
                                       autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield f"postgresql://aerestore@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
