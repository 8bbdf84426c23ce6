"""The embedded cluster stops when the last open in the last process closes, nested opens too."""

from __future__ import annotations

from pathlib import Path

from storage.embedded import open_embedded_postgres


async def test_nested_opens_in_one_process_stop_the_cluster_at_the_end(tmp_path: Path) -> None:
    pg_dir = tmp_path / "pg"
    async with open_embedded_postgres(pg_dir) as outer:
        async with open_embedded_postgres(pg_dir) as inner:
            assert inner == outer
        assert (pg_dir / "postmaster.pid").exists()  # the outer open still holds it
    assert not (pg_dir / "postmaster.pid").exists()
