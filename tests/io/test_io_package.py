"""The io room's boundary: what it may import (ARCHITECTURE.md); its public names are
pinned in tests/test_public_api.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import batchcast.io

# What io's modules may import (ARCHITECTURE.md: "io imports errors and forecast.config only";
# forecast.series is the torch-free batch type it builds, forecast.classes the torch-free
# classes configuration that forecast.config holds, coerce the shared value rules).
# Checked in the source, because at run time ``import batchcast.io`` first runs the package
# __init__ files above it.
_ALLOWED_BATCHCAST = {
    "batchcast.errors",
    "batchcast.coerce",
    "batchcast.forecast.classes",
    "batchcast.forecast.config",
    "batchcast.forecast.series",
}
_ALLOWED_THIRD_PARTY = {"numpy", "orjson", "smart_open", "boto3", "botocore"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_io_imports_only_what_its_room_allows() -> None:
    modules = sorted(Path(batchcast.io.__file__).parent.glob("*.py"))
    # The glob found the room (more modules may join it; each is checked).
    assert {p.stem for p in modules} >= {
        "__init__",
        "join",
        "jsonl",
        "model_files",
        "records",
        "shards",
        "sinks",
        "sources",
        "training",
        "validation",
    }
    for path in modules:
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("batchcast.io") or name in _ALLOWED_BATCHCAST:
                continue
            assert top != "batchcast", f"{path.name} imports {name}"
            assert top in _ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                f"{path.name} imports {name}"
            )
