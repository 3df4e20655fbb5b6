"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` on 127.0.0.1, a free port,
stopped and removed afterwards (also when a test failed). Tests that need one skip only when the
server programs are not installed; any other problem (no driver, a server that does not start)
is a failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: from PATH, else ``pg_config --bindir``."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            bindir = Path(out.stdout.strip())
            if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
                return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    """The server refuses to run as root: run its programs as `postgres` when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run_pg(cmd: list[str], cwd: Path, what: str, log: Path | None = None) -> None:
    out = subprocess.run(_as_server_user(cmd), cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"{what} failed (exit {out.returncode}): {' '.join(cmd)}\n"
                           f"stdout: {out.stdout}\nstderr: {out.stderr}\nserver log:\n{tail}")


@contextlib.contextmanager
def postgres_server(password: str | None = None, scheme: str = "postgresql+psycopg2") -> Iterator[str]:
    """Start a server and yield its URL for user ``postgres``. With ``password``, the server
    asks for it (scram-sha-256 over TCP) and the URL holds it; without, it trusts everyone."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed on this machine")
    base = Path(tempfile.mkdtemp(prefix="mtlsearch-pg-"))  # short path: the socket lives here too
    data, log = base / "data", base / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, user="postgres", group="postgres")
        auth = ["-A", "trust"]
        if password is not None:
            pwfile = base / "pw"
            pwfile.write_text(password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, user="postgres", group="postgres")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        _run_pg([str(bindir / "initdb"), "-D", str(data), *auth, "-U", "postgres", "--no-sync"], base, "initdb")
        for attempt in range(3):  # the free port may be taken between the probe and the start
            port = _free_port()
            opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
            try:
                _run_pg([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
                        base, "pg_ctl start", log)
                started = True
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        user = "postgres" if password is None else f"postgres:{password}"
        yield f"{scheme}://{user}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           cwd=base, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
