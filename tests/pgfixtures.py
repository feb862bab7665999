"""The database fixtures (a pytest plugin, loaded by conftest): one throwaway PostgreSQL cluster per
run, and ``db``/``store``, which run a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from h2ochat.server.storage import Store, StoreOptions, open_store

__all__ = ["db", "opened", "pg_cluster", "postgres_url", "store"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for the whole run (tests/pgcluster.py), or None where none is installed.

    Tests skip without it only on a developer machine; under CI (``CI`` set) a missing PostgreSQL fails.
    """
    import os

    from tests.pgcluster import Cluster, binaries

    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it with apt-get install -y postgresql")
        yield None
        return
    cluster = Cluster.create()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_url(pg_cluster: Any) -> str:
    """The URL of a new, empty database in the cluster."""
    if pg_cluster is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install -y postgresql); CI runs these tests")
    url: str = pg_cluster.create_database()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Both databases: a SQLite file, then a new PostgreSQL database (a module may name its own)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def opened(db: str, **options: Any) -> AsyncIterator[Store]:
    store = await open_store(db, StoreOptions(**options))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(db: str) -> AsyncIterator[Store]:
    async with opened(db) as store:
        yield store
