"""Embedded PostgreSQL (PyPI ``pgserver``) in the data directory, for zero-setup runs.

Several processes may share one embedded cluster (a running ``cpms serve`` and an admin command):
pgserver keeps a list of the processes holding it and stops the postmaster when the last one
lets go. A process killed with SIGKILL never lets go, so stale entries are pruned before joining.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import structlog
import trio

from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("storage.embedded")

DATABASE = "cpms"
#: clusters this process holds, with how many opens (``cpms demo`` opens its own twice, nested):
#: pgserver registers a process once, so this process lets go only when its last open closes
_HELD: dict[Path, list[Any]] = {}


def _prune_stale_handles(pg_dir: Path) -> None:
    handles = pg_dir / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p) and p != os.getpid()]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _start(pg_dir: Path) -> Any:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer, get_server

    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        if pg_dir.exists():
            _prune_stale_handles(pg_dir.resolve())
    server = get_server(pg_dir, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    return server


def _alive(server: Any) -> bool:
    """Whether the cluster's postmaster runs (a zombie, killed but not yet reaped, does not)."""
    info = server._postmaster_info  # pgserver keeps what it started or joined here
    process = None if info is None else info.process
    try:
        return process is not None and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _restart(server: Any, pg_dir: Path) -> None:
    from pgserver.postgres_server import PostgresServer

    with PostgresServer._lock:
        if _alive(server):
            return
        stale = pg_dir / "postmaster.pid"
        stale.unlink(missing_ok=True)  # its process is gone: a stale file would pass for alive
        server.ensure_postgres_running()


async def _watch(server: Any, pg_dir: Path, every: float) -> None:
    """Start the embedded PostgreSQL again whenever it has died (killed, crashed): the pool
    reconnects by itself, and what waited for the database goes on."""
    while True:
        await trio.sleep(every)
        if await trio.to_thread.run_sync(_alive, server):
            continue
        log.error("embedded PostgreSQL is down; starting it again", pg_dir=str(pg_dir))
        try:
            await trio.to_thread.run_sync(_restart, server, pg_dir)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:  # pgserver's
            log.error("embedded PostgreSQL did not start; trying again", error=str(exc))
        else:
            log.info("embedded PostgreSQL is up again", pg_dir=str(pg_dir))


@asynccontextmanager
async def open_embedded_postgres(pg_dir: Path, *, watch_every: float = 1.0) -> AsyncIterator[str]:
    """Start (or join) the embedded cluster in ``pg_dir``; yields a DSN for its ``cpms`` database.

    While it is open, a watchdog starts the cluster again if it dies (every ``watch_every``
    seconds it looks). On exit this process lets go of the cluster; the last process to let go
    stops it.

    Raises:
        StorageUnavailable: PostgreSQL could not be started (its log says why).
    """
    key = Path(await trio.Path(pg_dir).resolve())
    held = _HELD.get(key)
    if held is None:
        try:
            server = await trio.to_thread.run_sync(_start, pg_dir)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:  # pgserver's
            raise StorageUnavailable(
                f"embedded PostgreSQL in {pg_dir} failed to start: {exc}"
            ) from exc
        held = _HELD[key] = [server, 0]
    held[1] += 1
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, held[0], key, watch_every)
            yield str(held[0].get_uri(DATABASE))
            nursery.cancel_scope.cancel()
    finally:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(held[0].cleanup)
