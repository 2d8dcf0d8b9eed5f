"""The import rules of ARCHITECTURE.md, checked in a fresh interpreter: ``report`` (and the
metrics it shares with training) load neither torch nor Ray; matplotlib only when drawing."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return {name.split(".")[0] for name in out.stdout.split()}


def test_metrics_import_numpy_only() -> None:
    loaded = _loaded_after("import batchcast.forecast.metrics")
    assert {"torch", "ray", "pandas", "orjson"}.isdisjoint(loaded)


def test_report_imports_neither_torch_nor_ray() -> None:
    loaded = _loaded_after(
        "import batchcast.report.evaluate, batchcast.report.html, batchcast.report.command"
    )
    assert {"torch", "ray"}.isdisjoint(loaded)
    assert "matplotlib" not in loaded  # loaded on the first chart, not on import


def test_registering_the_commands_is_cheap() -> None:
    """cli.py imports report.command on every start: it must not pull in io (boto3)."""
    loaded = _loaded_after("import batchcast.report.command")
    assert {"boto3", "smart_open", "numpy", "matplotlib", "torch", "ray"}.isdisjoint(loaded)
