"""Shared fixtures: one embedded PostgreSQL for the whole run, a fresh database per test.

The cluster is started once (pgserver, in a temporary directory); the schema is migrated once into
a template database, and every test that needs a database gets its own copy of that template, so
tests never see each other's rows and never assume a running server.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.ledger import Ledger, StorageHooks, storage_actor_spec
from actors.runtime import Intensity, Registry, Supervisor, run_supervisor
from cpms.logs import configure_logging
from cpms.server.app import Endpoints
from storage import Database, migrate
from storage.database import open_database
from tests.ocpp_server import ADMIN, provision, start_server

TEMPLATE = "cpms_template"
_counter = itertools.count(1)


@dataclass
class PgCluster:
    server: Any

    def dsn(self, database: str) -> str:
        return str(self.server.get_uri(database))

    def psql(self, sql: str) -> str:
        return str(self.server.psql(sql))


#: a RAM disk for the test cluster when there is room: each test's database is made and, at the
#: end, deleted there in a fraction of the time a disk takes (some 450 databases of 7.5 MB)
RAM_DISK = Path("/dev/shm")
RAM_DISK_ROOM = 8 * 1024**3


def _cluster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        if shutil.disk_usage(RAM_DISK).free >= RAM_DISK_ROOM:
            return Path(tempfile.mkdtemp(prefix="cpms-tests-", dir=RAM_DISK))
    except OSError:
        pass
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server
    home = _cluster_home(tmp_path_factory)
    pg_dir: Path = home / "data"
    server = get_server(pg_dir, cleanup_mode="delete")
    cluster = PgCluster(server)
    # a throwaway cluster: no fsync (its data need not outlive a crash of this machine, only
    # of PostgreSQL, which the WAL in the page cache still covers); a test database is made
    # and each ledger batch committed without waiting for the disk
    cluster.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET full_page_writes = off;")
    cluster.psql("SELECT pg_reload_conf();")
    cluster.psql(f"CREATE DATABASE {TEMPLATE};")

    async def prepare() -> None:
        async with open_database(cluster.dsn(TEMPLATE), pool_size=2) as db:
            await migrate(db)

    trio.run(prepare)
    yield cluster
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def dsn(pg_cluster: PgCluster) -> str:
    """A fresh, migrated database for this test."""
    name = f"t{next(_counter)}"
    # a copy of the template's files: quicker than writing them through the WAL (the default)
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY;")
    return pg_cluster.dsn(name)


@pytest.fixture
def cli_env(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment an admin command sees: only this test's database and data dir."""
    for key in list(os.environ):
        if key.startswith("CPMS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CPMS_DATABASE_URL", dsn)
    monkeypatch.setenv("CPMS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CPMS_LOG_LEVEL", "WARNING")


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Database]:
    async with open_database(dsn, pool_size=8) as database:
        yield database


@dataclass
class LedgerRig:
    """A running StorageActor under a supervisor, with the Ledger facade over it."""

    db: Database
    registry: Registry
    supervisor: Supervisor
    ledger: Ledger


async def start_ledger(
    nursery: trio.Nursery,
    db: Database,
    *,
    hooks: StorageHooks | None = None,
    intensity: Intensity | None = None,
    batch: int = 64,
) -> LedgerRig:
    registry = Registry()
    supervisor: Supervisor = await nursery.start(
        run_supervisor, "test", registry, intensity or Intensity(restarts=10, period=10.0)
    )
    ref = await supervisor.start_child(storage_actor_spec(db, batch=batch, hooks=hooks))
    return LedgerRig(db, registry, supervisor, Ledger(ref, db))


@pytest.fixture
async def rig(db: Database, nursery: trio.Nursery) -> LedgerRig:
    return await start_ledger(nursery, db)


@pytest.fixture(autouse=True)
def _no_rate_limits_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's servers take requests as fast as its tests send them (a charging test polls
    a session every 50 ms, the payment storm tops up 1,000 times from a hundred clients): rate
    limits are off unless a test sets them, as ``test_api_protections`` does (and ``cli_env``,
    which starts from an empty environment)."""
    for name in ("DEFAULT", "CRITICAL", "WEBHOOK"):
        monkeypatch.setenv(f"CPMS_RATE_LIMIT_{name}", "0")


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("INFO", "console")


@pytest.fixture
async def server(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Endpoints]:
    for name in ("CP-1", "CP-2"):
        await provision(db, name)
    endpoints, shutdown = await start_server(nursery, dsn, tmp_path, admin_token=ADMIN)
    yield endpoints
    shutdown.set()
