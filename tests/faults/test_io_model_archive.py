"""Model artifacts that must be refused before anything is built (issue 9.7): archive members
that are not plain files at the root (or in one folder), duplicates, and weights that do not
fit the configuration (a corrupt ``num_cells`` would otherwise ask for hundreds of GB).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import torch

from batchcast.errors import ModelError
from batchcast.forecast import DeepAR, ModelSpec
from batchcast.forecast.artifacts import CONFIG_NAME, WEIGHTS_NAME, encode_model
from batchcast.models import check_model, load_model


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """A small model's two files."""
    spec = ModelSpec(
        freq="H", context_length=4, prediction_length=2, lags=(1, 2), num_time_features=4
    )
    torch.manual_seed(1)
    return encode_model(DeepAR(spec).eval())


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _folder(name: str) -> tuple[tarfile.TarInfo, None]:
    return _special(name, tarfile.DIRTYPE)


_BAD = {
    "parent": (lambda f: [_file("../../evil/config.json", f[CONFIG_NAME])], "'..'"),
    "absolute": (lambda f: [_file("/etc/config.json", f[CONFIG_NAME])], "absolute path"),
    "duplicate": (
        lambda f: [
            _file(CONFIG_NAME, f[CONFIG_NAME]),
            _file(WEIGHTS_NAME, f[WEIGHTS_NAME]),
            _file(f"./{CONFIG_NAME}", b"{}"),
        ],
        "more than once",
    ),
    "symlink": (
        lambda f: [_special(CONFIG_NAME, tarfile.SYMTYPE, "/etc/passwd")],
        "is a link",
    ),
    "hardlink": (
        lambda f: [_file("x", f[CONFIG_NAME]), _special(CONFIG_NAME, tarfile.LNKTYPE, "x")],
        "is a link",
    ),
    "device": (lambda f: [_special(CONFIG_NAME, tarfile.CHRTYPE)], "device or FIFO"),
    "fifo": (lambda f: [_special(CONFIG_NAME, tarfile.FIFOTYPE)], "device or FIFO"),
    "nested": (lambda f: [_file("a/b/config.json", f[CONFIG_NAME])], "folder inside a folder"),
    "two places": (
        lambda f: [_file(CONFIG_NAME, f[CONFIG_NAME]), _file(f"m/{WEIGHTS_NAME}", f[WEIGHTS_NAME])],
        "not where the other files are",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_unsafe_members_are_refused(files: dict[str, bytes], tmp_path: Path, case: str) -> None:
    build, words = _BAD[case]
    uri = _archive(tmp_path / "model.tar.gz", build(files))
    for load in (load_model, check_model):
        with pytest.raises(ModelError, match=words) as info:
            load(uri)
        message = str(info.value)
        assert uri in message
        assert "\n" not in message


@pytest.mark.parametrize(
    "layout",
    [
        lambda f: [
            _folder("."),
            _file("./config.json", f[CONFIG_NAME]),
            _file("./model.safetensors", f[WEIGHTS_NAME]),
        ],
        lambda f: [
            _folder("model"),
            _file("model/config.json", f[CONFIG_NAME]),
            _file("model/model.safetensors", f[WEIGHTS_NAME]),
            _file("model/README", b"extra files are ignored"),
        ],
    ],
    ids=["dot-slash", "one-folder"],
)
def test_documented_layouts_load(
    files: dict[str, bytes], tmp_path: Path, layout: Callable[..., list]
) -> None:
    uri = _archive(tmp_path / "model.tar.gz", layout(files))
    assert load_model(uri).spec == check_model(uri)


# --- weights that do not fit the configuration fail before anything is built

_LOW_MEMORY = r"""
import resource, sys
# 3 GiB of address space: torch loads, a network of 1e9 cells (736 GB) cannot.
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from batchcast.models import check_model, load_model
for load in (check_model, load_model):
    try:
        load(sys.argv[1])
        print("loaded")
    except Exception as err:
        print(f"{type(err).__name__}: {err}")
"""


def _spec_edit(files: dict[str, bytes], **change: object) -> dict[str, bytes]:
    config = orjson.loads(files[CONFIG_NAME])
    config["spec"].update(change)
    return {**files, CONFIG_NAME: orjson.dumps(config)}


@pytest.mark.parametrize("change", [{"num_cells": 10**9}, {"num_layers": 10**6}])
def test_a_config_that_contradicts_the_weights_fails_before_any_allocation(
    files: dict[str, bytes], tmp_path: Path, change: dict[str, int]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in _spec_edit(files, **change).items():
        (folder / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _LOW_MEMORY, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stderr
    for line in lines:
        assert line.startswith("ModelError: "), line
        assert str(folder) in line
        assert "weights do not match the model spec" in line


@pytest.mark.parametrize(
    "damage",
    [
        lambda w: w[: len(w) - 10],  # tensor data cut short
        lambda w: w + b"\x00" * 16,  # trailing bytes the header does not describe
        lambda w: (10**12).to_bytes(8, "little") + w[8:],  # a header length past the file
        lambda w: w[:8] + b"[" + w[9:],  # a header that is not JSON
    ],
    ids=["truncated", "trailing", "huge-header", "corrupt-header"],
)
def test_damaged_weights_are_found_by_the_header_check(
    files: dict[str, bytes], tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / CONFIG_NAME).write_bytes(files[CONFIG_NAME])
    (folder / WEIGHTS_NAME).write_bytes(damage(files[WEIGHTS_NAME]))
    with pytest.raises(ModelError, match="weights do not match the model spec"):
        check_model(str(folder))
