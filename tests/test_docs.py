"""The documentation, tested: README's examples run as written, its option tables match the
CLI's parser, the example job file works, every link resolves, docs/architecture.md lists the
real modules.

README's examples run from the repository root after ``batchcast demo``. Here they run, each
as its own ``bash`` (or ``python``) process, in a temporary folder laid out as the demo leaves
it (``DEMO_LAYOUT``, with a tiny model trained by the fixture instead of the demo's) plus a
copy of ``examples/``. A block the tests cannot run carries a marker on the line before it,
``<!-- test_docs: skip (why) -->``; a reason that names ``.ci/run`` is checked (the block is in
.ci/run verbatim), and so is every file a reason names.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchcast.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
EXAMPLES = REPO / "examples"
CI_RUN = REPO / ".ci" / "run"

# What `batchcast demo` leaves that README's examples use; .ci/run checks the real demo's.
DEMO_LAYOUT = (
    "batchcast-demo/train.jsonl",
    "batchcast-demo/input/sample.jsonl",
    "batchcast-demo/model/config.json",
)
# The tiny stand-in for the demo's model: the demo's hyperparameters, a smaller network.
TINY = {"epochs": "1", "num_cells": "8"}
BLOCK_TIMEOUT_S = 240  # a transform starts a local Ray: seconds on a loaded 2-core machine


# ---------------------------------------------------------------------------------------------
# Reading Markdown


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None  # the reason of a ``test_docs: skip`` marker on the line before

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


_SKIP = re.compile(r"<!--\s*test_docs:\s*skip\s*\((.+)\)\s*-->")


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = lines[i - 1] if i > 0 else ""
            marker = _SKIP.search(before)
            text = "\n".join(lines[start + 1 : end]) + "\n"
            blocks.append(Block(path, start + 1, lang, text, marker.group(1) if marker else None))
            i = end
        i += 1
    return blocks


def prose(path: Path) -> str:
    """``path`` without its fenced blocks (for links and inline code)."""
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def sections(path: Path, level: int) -> dict[str, str]:
    """Heading text -> the text under it, up to the next heading of ``level`` or higher."""
    found: dict[str, str] = {}
    title, body = None, []
    fenced = False
    for line in path.read_text().splitlines():
        fenced = fenced != line.startswith("```")
        match = re.match(r"(#{1,6}) (.*)", line) if not fenced else None
        if match and len(match.group(1)) <= level:
            if title is not None:
                found[title] = "\n".join(body)
            title, body = match.group(2).strip(), []
        else:
            body.append(line)
    if title is not None:
        found[title] = "\n".join(body)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


# ---------------------------------------------------------------------------------------------
# The CLI's parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name -> its parser. argparse has no public accessor for subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The ``--long`` flags of ``parser`` (``--no-x`` included), without ``--help``."""
    return {
        flag
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }


def positionals(parser: argparse.ArgumentParser) -> set[str]:
    """Positional arguments as README's tables name them: upper case."""
    return {
        action.dest.upper()
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    }


PARSER = build_parser()
COMMANDS = subcommands(PARSER)
ALL_FLAGS = set().union(*(option_flags(p) for p in COMMANDS.values())) | option_flags(PARSER)
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def command_section(name: str) -> str:
    return sections(README, 3).get(f"`batchcast {name}`", "")


def table_entries(text: str) -> tuple[set[str], set[str]]:
    """(flags, positionals) named in the first cell of each table row of ``text``."""
    flags: set[str] = set()
    names: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        flags |= set(_FLAG.findall(cell))
        names |= set(re.findall(r"`([A-Z][A-Z_]*)`", cell))
    return flags, names


def command_lines(text: str) -> Iterator[tuple[str, str]]:
    """(command, its arguments) for every ``batchcast <command> ...`` in ``text``.

    Continuation lines (a trailing backslash, or indented lines of a synopsis) are joined;
    the arguments end at a shell pipe or ``&&``.
    """
    logical: list[str] = []
    for line in text.splitlines():
        if logical and (logical[-1].endswith("\\") or line.startswith("    ")):
            logical[-1] = logical[-1].rstrip("\\") + " " + line.strip()
        else:
            logical.append(line)
    for line in logical:
        for match in re.finditer(r"\bbatchcast ([a-z][a-z-]*)", line):
            rest = re.split(r" \| | && |`", line[match.end() :])[0]
            yield match.group(1), rest


# ---------------------------------------------------------------------------------------------
# (a) README's examples, run as written


def runnable_blocks() -> list[Block]:
    return [b for b in fenced_blocks(README) if b.lang in ("bash", "python") and b.skip is None]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the repository root after ``batchcast demo``, tiny."""
    from batchcast.api import train
    from batchcast.demo import HYPERPARAMETERS
    from batchcast.synthetic import synthetic_records, write_jsonl

    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(EXAMPLES, root / "examples")
    demo = root / "batchcast-demo"
    write_jsonl(demo / "train.jsonl", synthetic_records(24, freq="H", length=(60, 120), seed=1))
    write_jsonl(
        demo / "input" / "sample.jsonl", synthetic_records(40, freq="H", length=(30, 80), seed=2)
    )
    hyperparameters = {**HYPERPARAMETERS, **TINY}
    train(str(demo / "train.jsonl"), hyperparameters=hyperparameters, model_dir=str(demo / "model"))
    for relpath in DEMO_LAYOUT:
        assert (root / relpath).is_file(), relpath
    return root


@pytest.fixture(scope="module")
def gluonts_predictor(workspace: Path) -> Path:
    """``my-gluonts-predictor``: an untrained GluonTS torch DeepAR predictor, serialized."""
    pytest.importorskip("gluonts")
    path = workspace / "my-gluonts-predictor"
    script = f"""
import torch
from pathlib import Path
from gluonts.torch.model.deepar import DeepAREstimator
estimator = DeepAREstimator(freq="h", prediction_length=24, context_length=24, hidden_size=8)
torch.manual_seed(0)
predictor = estimator.create_predictor(
    estimator.create_transformation(), estimator.create_lightning_module()
)
Path({str(path)!r}).mkdir()
predictor.serialize(Path({str(path)!r}))
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=BLOCK_TIMEOUT_S)
    return path


def _env() -> dict[str, str]:
    """This environment with this venv's ``batchcast`` first on PATH, and nothing set that
    README's examples do not set (no cluster to join, no inference configuration)."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "DEEPAR_INFERENCE_CONFIG", "MODEL_SERVER_WORKERS"):
        env.pop(key, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _lines(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _inputs(ws: Path) -> list[Any]:
    return _lines(ws / "batchcast-demo" / "input" / "sample.jsonl")


def _horizon(ws: Path) -> int:
    config = orjson.loads((ws / "batchcast-demo" / "model" / "config.json").read_bytes())
    return int(config["spec"]["prediction_length"])


def _check_transform(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    inference = orjson.loads((ws / "examples" / "inference-config.json").read_bytes())
    lines = _lines(ws / "my-output" / "sample.jsonl.out")
    inputs = _inputs(ws)
    assert len(lines) == len(inputs)
    for line, record in zip(lines, inputs, strict=True):
        assert list(line) == ["item_id", "quantiles", "mean"]
        assert line["item_id"] == record["item_id"]
        assert list(line["quantiles"]) == inference["quantiles"]
        assert len(line["mean"]) == _horizon(ws)
    summary = orjson.loads((ws / "my-output" / "_batchcast_summary.json").read_bytes())
    assert summary["status"] == "Completed"


def _check_job_file(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    body = orjson.loads((ws / "examples" / "transform-job.json").read_bytes())
    inference = orjson.loads(body["Environment"]["DEEPAR_INFERENCE_CONFIG"])
    folder = ws / body["TransformOutput"]["S3OutputPath"]
    lines = _lines(folder / "sample.jsonl.out")
    inputs = _inputs(ws)
    assert len(lines) == len(inputs)
    for line, record in zip(lines, inputs, strict=True):
        # OutputFilter $['item_id','SageMakerOutput'] of the input joined with its forecast
        assert list(line) == ["item_id", "SageMakerOutput"]
        assert line["item_id"] == record["item_id"]
        forecast = line["SageMakerOutput"]
        assert sorted(forecast) == sorted(inference["output_types"])
        assert list(forecast["quantiles"]) == inference["quantiles"]
    summary_text = (folder / "_batchcast_summary.json").read_text()
    assert orjson.loads(summary_text)["status"] == "Completed"
    assert body["TransformJobName"] in summary_text
    for key in ("ModelName", "TransformResources"):  # accepted, reported as ignored
        assert key in summary_text


def _check_train(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    config = orjson.loads((ws / "my-model" / "config.json").read_bytes())
    hyperparameters = orjson.loads((ws / "examples" / "hyperparameters.json").read_bytes())
    assert config["spec"]["prediction_length"] == int(hyperparameters["prediction_length"])
    metrics = orjson.loads((ws / "my-model" / "metrics.json").read_bytes())
    assert "test:mean_wQuantileLoss" in metrics
    assert "#test:RMSE:" in out.stdout


def _check_predict(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    response = orjson.loads(out.stdout)
    (prediction,) = response["predictions"]
    assert list(prediction["quantiles"]) == ["0.5"]  # the request's configuration
    assert len(prediction["mean"]) == _horizon(ws)


def _check_import(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    config = orjson.loads((ws / "imported-model" / "config.json").read_bytes())
    assert config["spec"]["freq"] == "H"
    assert (ws / "imported-model" / "model.safetensors").is_file()


def _check_stock(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    # stdout: the transform's human summary, then the output file (cat)
    lines = [orjson.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [r["item_id"] for r in lines] == ["sku-1", "sku-2", "sku-3"]
    for r in lines:
        assert list(r) == ["item_id", "predicted_label", "probability", "probabilities"]
        assert r["probabilities"][1] == r["probability"]  # two classes: the upper one's
        assert r["predicted_label"] == ("stockout" if r["probability"] > 0.5 else "covered")


def _check_python_api(ws: Path, out: subprocess.CompletedProcess[str]) -> None:
    assert (ws / "api-model" / "config.json").is_file()
    assert len(_lines(ws / "api-output" / "sample.jsonl.out")) == len(_inputs(ws))
    assert out.stdout.startswith("[")  # the printed mean


# A distinctive piece of a README block -> what must hold after it ran (beyond exit 0).
CHECKS: dict[str, Callable[[Path, subprocess.CompletedProcess[str]], None]] = {
    "examples/inference-config.json": _check_transform,
    "examples/stock-records.jsonl": _check_stock,
    "--job examples/transform-job.json": _check_job_file,
    "batchcast train": _check_train,
    "batchcast predict": _check_predict,
    "batchcast import-gluonts": _check_import,
    "batchcast.transform(": _check_python_api,
}


def test_every_check_names_one_readme_block() -> None:
    """A check whose README block was edited away would silently stop checking."""
    blocks = runnable_blocks()
    for key in CHECKS:
        assert sum(key in b.text for b in blocks) == 1, key


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.where)
def test_readme_example_runs_as_written(
    block: Block, workspace: Path, request: pytest.FixtureRequest
) -> None:
    if "my-gluonts-predictor" in block.text:
        request.getfixturevalue("gluonts_predictor")
    command = (
        ["bash", "-euo", "pipefail", "-c", block.text]
        if block.lang == "bash"
        else [sys.executable, "-c", block.text]
    )
    out = subprocess.run(
        command,
        cwd=workspace,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, f"{block.where} failed:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    for key, check in CHECKS.items():
        if key in block.text:
            check(workspace, out)


def test_skipped_blocks_are_run_elsewhere() -> None:
    """Every skip marker gives a reason, and what the reason claims is so."""
    ci = CI_RUN.read_text().splitlines()
    skipped = [b for b in fenced_blocks(README) if b.skip is not None]
    assert skipped, "the install one-liners are expected to be skipped here"
    for block in skipped:
        if ".ci/run" in block.skip:
            for line in block.text.strip().splitlines():
                assert line in ci, f"{block.where}: {line!r} is not in .ci/run verbatim"
        for named in re.findall(r"[\w./-]+\.py\b", block.skip):
            assert (REPO / named).is_file(), f"{block.where}: {named} does not exist"


def test_ci_runs_the_headline_commands_then_lint() -> None:
    """.ci/run runs README's demo and test one-liners verbatim, checks the demo's layout that
    the workspace above mirrors, then ruff and mypy."""
    ci = CI_RUN.read_text()
    lines = ci.splitlines()
    headline = [b.text.strip() for b in fenced_blocks(README) if b.skip and ".ci/run" in b.skip]
    assert any(c.endswith("&& pytest") for c in headline)
    assert any(c.endswith("&& batchcast demo") for c in headline)
    positions = [lines.index(c) for c in headline]
    for relpath in DEMO_LAYOUT:
        assert relpath in ci, f".ci/run does not check {relpath}"
    lint = [i for i, line in enumerate(lines) if line.startswith(("ruff ", "mypy"))]
    assert lint
    assert min(lint) > max(positions)


def test_cpu_install_pins_the_constrained_torch() -> None:
    """README's CPU-only command installs the torch that constraints.txt pins, and the pin
    accepts the CPU build's local version (so the project install keeps it)."""
    from packaging.specifiers import SpecifierSet

    pins = re.findall(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert len(pins) == 1
    (version,) = pins
    (cpu,) = [b for b in fenced_blocks(README) if "download.pytorch.org/whl/cpu" in b.text]
    assert f"pip install torch=={version} --index-url https://download.pytorch.org/whl/cpu" in (
        cpu.text
    )
    assert "pip install -c constraints.txt -e ." in cpu.text
    assert SpecifierSet(f"=={version}").contains(f"{version}+cpu")


def test_example_hyperparameters_fit_the_demos_data() -> None:
    """A model trained with examples/hyperparameters.json reads the demo's input the way the
    demo's model does: same frequency, context and horizon."""
    from batchcast.demo import HYPERPARAMETERS
    from batchcast.forecast.config import DeepARConfig

    example = orjson.loads((EXAMPLES / "hyperparameters.json").read_bytes())
    DeepARConfig.from_hyperparameters(example)  # valid
    for key in ("time_freq", "context_length", "prediction_length"):
        assert example[key] == HYPERPARAMETERS[key], key


# ---------------------------------------------------------------------------------------------
# (b) README's option tables and the CLI's parser


def test_every_command_has_a_readme_section() -> None:
    documented = {
        t[len("`batchcast ") : -1] for t in sections(README, 3) if t.startswith("`batchcast ")
    }
    assert documented == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_option_table_matches_help(name: str) -> None:
    """The table of ``batchcast <name>`` lists exactly the parser's flags and positionals."""
    flags, names = table_entries(command_section(name))
    parser = COMMANDS[name]
    assert flags == option_flags(parser), f"batchcast {name}: README table vs --help"
    assert names == positionals(parser), f"batchcast {name}: README table vs --help"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from batchcast.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in option_flags(COMMANDS[name]):
        assert flag in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_text(name: str) -> None:
    """``--help`` says what each option does, not just its name."""
    silent = [
        "/".join(action.option_strings) or action.dest
        for action in COMMANDS[name]._actions
        if action.option_strings != ["-h", "--help"] and not action.help
    ]
    assert silent == [], f"batchcast {name}: options without help text"


def test_top_level_flags_are_documented() -> None:
    """``batchcast --version`` and the like appear in README's Command line section."""
    intro = sections(README, 3)["Command line"]
    for flag in option_flags(PARSER):
        assert f"`batchcast {flag}`" in intro or f"`{flag}`" in intro, flag


def test_every_flag_written_in_the_docs_exists() -> None:
    """Every ``batchcast <cmd> --flag`` in README and docs/ (code blocks and inline code) is a
    flag of that command, and every inline ``--flag`` is a flag of some command."""
    for path in [README, *DOCS]:
        texts = [b.text for b in fenced_blocks(path)]
        spans = re.findall(r"`([^`\n]+)`", prose(path))
        for text in [*texts, *spans]:
            for command, rest in command_lines(text):
                assert command in COMMANDS, f"{path.name}: no command {command!r}: {text!r}"
                for flag in _FLAG.findall(rest):
                    known = option_flags(COMMANDS[command]) | option_flags(PARSER)
                    assert flag in known, f"{path.name}: batchcast {command} has no {flag}"
        for span in spans:
            if span.startswith("--"):
                flag = _FLAG.match(span)
                assert flag is not None, f"{path.name}: {span!r}"
                assert flag.group(0) in ALL_FLAGS, f"{path.name}: {span!r}"


# ---------------------------------------------------------------------------------------------
# (c) The example files


def test_example_job_file_parses() -> None:
    from batchcast.runner.job import TransformJob

    body = orjson.loads((EXAMPLES / "transform-job.json").read_bytes())
    job = TransformJob.from_request(body, model="batchcast-demo/model")
    source = body["TransformInput"]["DataSource"]["S3DataSource"]
    assert job.input == source["S3Uri"]
    assert job.data_type == source["S3DataType"]
    assert job.output == body["TransformOutput"]["S3OutputPath"]
    assert job.name == body["TransformJobName"]
    assert job.workers == body["MaxConcurrentTransforms"]
    assert job.join.join_source == body["DataProcessing"]["JoinSource"]
    assert job.inference.to_dict() == {
        "num_samples": 50,
        "output_types": ["mean", "quantiles"],
        "quantiles": ["0.1", "0.5", "0.9"],
    }
    assert {key for key, _ in job.ignored} == {"ModelName", "TransformResources"}


def test_job_bodies_in_the_docs_parse() -> None:
    """Every JSON block of the docs that is a CreateTransformJob body is a valid one."""
    from batchcast.runner.job import TransformJob

    bodies = [
        orjson.loads(b.text)
        for path in [README, *DOCS]
        for b in fenced_blocks(path)
        if b.lang == "json" and '"TransformInput"' in b.text
    ]
    assert bodies
    for body in bodies:
        job = TransformJob.from_request(body, model="m")
        assert job.input == body["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]


@pytest.mark.parametrize("name", ["inference-config.json", "inference-config-samples.json"])
def test_example_inference_configs_are_valid(name: str) -> None:
    from batchcast.forecast.config import InferenceConfig

    text = (EXAMPLES / name).read_bytes()
    config = InferenceConfig.from_json(text)
    assert config.to_dict() == {**InferenceConfig().to_dict(), **orjson.loads(text)}


def test_example_predict_request_is_answered(workspace: Path) -> None:
    from batchcast.api import predict

    request = orjson.loads((EXAMPLES / "predict-request.json").read_bytes())
    response = predict(str(workspace / "batchcast-demo" / "model"), request)
    assert len(response["predictions"]) == len(request["instances"])
    for prediction in response["predictions"]:
        assert list(prediction["quantiles"]) == request["configuration"]["quantiles"]


def test_json_blocks_are_json() -> None:
    for path in [README, *DOCS]:
        for block in fenced_blocks(path):
            if block.lang == "json":
                try:
                    orjson.loads(block.text)
                except orjson.JSONDecodeError as err:
                    pytest.fail(f"{block.where}: {err}")


# ---------------------------------------------------------------------------------------------
# (d) Links, and what the docs must not point at


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", prose(path))
    links = _LINK.findall(text)
    for target in links:
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.exists(), f"{path.name}: {target} -> {resolved} does not exist"
        if anchor:
            assert resolved.suffix == ".md", f"{path.name}: anchor into {resolved.name}"
            anchors = {slug(title) for title in sections(resolved, 6)}
            assert anchor in anchors, f"{path.name}: no #{anchor} in {resolved.name}"


def test_docs_cite_no_team_only_files() -> None:
    """Users do not have the team's SPEC.md or /work/shared: the repository's docs/ are the
    contract."""
    for path in [README, *DOCS]:
        text = path.read_text()
        for name in ("SPEC.md", "/work/shared", "../shared"):
            assert name not in text, f"{path.name} cites {name}"


# ---------------------------------------------------------------------------------------------
# docs/architecture.md and the tree


def test_architecture_lists_every_module() -> None:
    """docs/architecture.md names every module of the package, and only real ones.
    (Sub-package ``__init__.py`` files only re-export and are not listed.)"""
    package = REPO / "batchcast"
    real = {
        str(p.relative_to(REPO))
        for p in package.rglob("*.py")
        if p.name != "__init__.py" or p.parent == package
    }
    text = (REPO / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"`(batchcast/[\w/]+\.py)`", text))
    assert sorted(real - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - real) == [], "docs/architecture.md lists modules that do not exist"
