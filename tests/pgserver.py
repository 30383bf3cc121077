"""A real PostgreSQL for tests: Debian's binaries, a fresh cluster in a temporary directory,
listening on a free loopback port with password authentication. Skips visibly where the
binaries are missing.

    from pgserver import postgres   # the session-scoped fixture
    db = postgres.create_database()  -> a libpq string without the password
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PASSWORD = "lake-test-pw-3141"
PASSWORD_ENV = "RECORDER_TEST_PG_PASSWORD"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir, self.base = bindir, base
        self.data, self.sockets = base / "data", base / "sockets"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        self.sockets.mkdir()
        if os.geteuid() == 0:
            uid = pwd.getpwnam("postgres").pw_uid
            for p in (self.base, self.sockets, pwfile):
                os.chown(p, uid, -1)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--no-sync")
        self.start()

    def start(self) -> None:
        opts = (f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-o", opts,
                  "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def libpq(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user=postgres"

    def create_database(self) -> str:
        name = f"lake{os.getpid()}_{next(self._names)}"
        subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True,
                       env={**os.environ, "PGPASSWORD": PASSWORD}, timeout=30)
        return self.libpq(name)


@pytest.fixture(scope="session")
def postgres():
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL not installed: apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL's initdb refuses root and there is no 'postgres' user: apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="recorder-pg-"))
    server = PostgresServer(bindir, base)
    server.init()
    os.environ[PASSWORD_ENV] = PASSWORD
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
