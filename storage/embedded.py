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
import trio

from storage.errors import StorageUnavailable

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


@asynccontextmanager
async def open_embedded_postgres(pg_dir: Path) -> AsyncIterator[str]:
    """Start (or join) the embedded cluster in ``pg_dir``; yields a DSN for its ``cpms`` database.

    On exit this process lets go of the cluster; the last process to let go stops it.

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
        yield str(held[0].get_uri(DATABASE))
    finally:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(held[0].cleanup)
