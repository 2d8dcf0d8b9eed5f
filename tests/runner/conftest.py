"""Fixtures shared by the executor tests (threads, processes, Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchcast.synthetic import synthetic_records, write_jsonl


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two files (300 and 200 series), each cut into several shards by ``shard_mb=0.01``."""
    folder = tmp_path_factory.mktemp("in")
    write_jsonl(folder / "a.jsonl", synthetic_records(300, freq="H", length=(20, 50), seed=2))
    write_jsonl(folder / "b.jsonl", synthetic_records(200, freq="H", length=(20, 50), seed=3))
    return folder
