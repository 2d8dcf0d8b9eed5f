"""Which room may import which (docs/architecture.md, "Which room may import which").

Two checks: every ``import`` statement of every module, read from its syntax tree (so an
import inside a function counts too), and what a fresh interpreter has loaded after running
a command that must not pay for Ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "batchcast"

# room -> top-level packages it must never import (anywhere in the module, lazily or not)
FORBIDDEN = {
    "forecast": {"ray", "smart_open", "boto3", "botocore", "fastapi", "uvicorn"},
    "io": {"torch", "ray", "fastapi", "uvicorn"},
    "report": {"ray"},
}
# the only modules allowed to import Ray
RAY_MODULES = {
    "batchcast/runner/pool.py",
    "batchcast/runner/worker.py",
    "batchcast/runner/tasks.py",
    "batchcast/serve/ray_host.py",
}
# io may use these torch-free forecast modules, and no other
IO_MAY_USE = {
    "batchcast.forecast.config",
    "batchcast.forecast.classes",
    "batchcast.forecast.series",
}
IO_MAY_USE |= {"batchcast.forecast.frequency", "batchcast.forecast"}


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, absolute, from any scope."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_every_module_parses_and_there_are_modules_in_each_room() -> None:
    rooms = {p.relative_to(PACKAGE).parts[0] for p in _modules() if p.parent != PACKAGE}
    assert {"forecast", "io", "runner", "serve", "report"} <= rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_never_imports_what_it_must_not(room: str) -> None:
    offenders = {}
    for path in sorted((PACKAGE / room).rglob("*.py")):
        bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN[room]}
        if bad:
            offenders[_rel(path)] = sorted(bad)
    assert offenders == {}


def test_only_the_listed_modules_import_ray() -> None:
    importers = {_rel(p) for p in _modules() if any(n.split(".")[0] == "ray" for n in _imports(p))}
    assert importers == RAY_MODULES


def test_forecast_imports_no_other_room() -> None:
    # errors and coerce are the package's shared leaves, below every room
    offenders = {}
    for path in sorted((PACKAGE / "forecast").rglob("*.py")):
        bad = {
            n
            for n in _imports(path)
            if n.startswith("batchcast.")
            and not n.startswith("batchcast.forecast")
            and n not in ("batchcast.errors", "batchcast.coerce")
        }
        if bad:
            offenders[_rel(path)] = sorted(bad)
    assert offenders == {}


def test_io_uses_only_the_torch_free_forecast_modules() -> None:
    offenders = {}
    for path in sorted((PACKAGE / "io").rglob("*.py")):
        bad = {
            n
            for n in _imports(path)
            if n.startswith("batchcast.")
            and not n.startswith(("batchcast.io", "batchcast.errors", "batchcast.coerce"))
            and n not in IO_MAY_USE
        }
        if bad:
            offenders[_rel(path)] = sorted(bad)
    assert offenders == {}


def _loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split()[-1:] and done.stdout.splitlines()[-1].split())


def test_predict_runs_without_loading_ray(tmp_path: Path) -> None:
    # A real model and a real request through the CLI's own entry point, in a fresh process.
    code = f"""
import contextlib
from batchcast.forecast import DeepAR, ModelSpec
from batchcast.models import save_model
import torch, orjson
torch.manual_seed(0)
spec = ModelSpec(freq="H", context_length=8, prediction_length=4, lags=(1, 2, 24),
                 num_time_features=4, num_cells=8, num_layers=1)
save_model(DeepAR(spec).eval(), {str(tmp_path / "model")!r})
request = {{"instances": [{{"start": "2024-01-01 00:00:00", "target": [1.0, 2.0, 3.0, 4.0]}}],
            "configuration": {{"num_samples": 10, "output_types": ["mean"]}}}}
open({str(tmp_path / "req.json")!r}, "wb").write(orjson.dumps(request))
from batchcast.cli import main
with open({str(tmp_path / "answer.json")!r}, "w") as out, contextlib.redirect_stdout(out):
    model, request = {str(tmp_path / "model")!r}, {str(tmp_path / "req.json")!r}
    status = main(["predict", "--model", model, request])
assert status == 0, status
answer = orjson.loads(open({str(tmp_path / "answer.json")!r}, "rb").read())
assert len(answer["predictions"][0]["mean"]) == 4, answer
"""
    loaded = _loaded_after(code)
    assert "batchcast.runner.processor" in loaded  # the real predict path ran
    assert not {m for m in loaded if m == "ray" or m.startswith("ray.")}


def test_importing_the_cli_loads_no_torch_ray_or_fastapi() -> None:
    loaded = _loaded_after("import batchcast.cli")
    heavy = {"torch", "ray", "fastapi", "uvicorn", "matplotlib"}
    assert not {m for m in loaded if m.split(".")[0] in heavy}
