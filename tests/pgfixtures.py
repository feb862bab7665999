"""The PostgreSQL fixtures (a pytest plugin, loaded by conftest): one throwaway cluster per run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["pg_cluster", "postgres_url"]


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
