"""Model artifacts: save/load round trips (folder, model.tar.gz, S3) and every load failure.

A model is ``config.json`` + ``model.safetensors``; loading must never unpickle anything, and
every way an artifact can be broken must surface as a ModelError that says what is wrong.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from safetensors import safe_open

from batchcast.errors import ModelError
from batchcast.forecast import DeepAR, InferenceConfig, SeriesBatch, forecast
from batchcast.forecast.artifacts import CONFIG_NAME
from batchcast.forecast.model import state_shapes
from batchcast.models import load_model, load_spec, save_model

HYPERPARAMETERS = {"time_freq": "H", "context_length": 5, "prediction_length": 4, "epochs": 1}
METADATA = {"seed": 3, "note": "round trip"}


@pytest.fixture(scope="module")
def model(make_model: Callable[..., DeepAR]) -> DeepAR:
    return make_model(
        seed=3, cardinality=(3, 2), embedding_dims=(2, 1), num_dynamic_feat=1, default_scale=4.0
    )


@pytest.fixture(scope="module")
def batch(make_batch: Callable[..., SeriesBatch]) -> SeriesBatch:
    return make_batch(prediction_length=4, num_dynamic_feat=1, cardinality=(3, 2))


def _forecast_bytes(model: DeepAR, batch: SeriesBatch) -> bytes:
    config = InferenceConfig.from_mapping({"num_samples": 16, "output_types": ["samples"]})
    out = forecast(model, batch, config, generator=torch.Generator().manual_seed(0))
    assert out.samples is not None
    return out.samples.tobytes()


def _assert_same_model(loaded: Any, model: DeepAR, batch: SeriesBatch) -> None:
    assert loaded.spec == model.spec
    assert loaded.hyperparameters == HYPERPARAMETERS
    assert loaded.metadata == METADATA
    assert not loaded.model.training  # loaded in eval mode
    ours, theirs = model.state_dict(), loaded.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert _forecast_bytes(loaded.model, batch) == _forecast_bytes(model, batch)


# ---------------------------------------------------------------------------------------------
# Round trips


def test_folder_round_trip(model: DeepAR, batch: SeriesBatch, tmp_path: Path) -> None:
    uri = str(tmp_path / "model")
    assert save_model(model, uri, hyperparameters=HYPERPARAMETERS, metadata=METADATA) == uri
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    _assert_same_model(load_model(uri), model, batch)
    _assert_same_model(load_model(uri + "/"), model, batch)


def test_tar_gz_round_trip(model: DeepAR, batch: SeriesBatch, tmp_path: Path) -> None:
    uri = str(tmp_path / "out" / "model.tar.gz")
    save_model(model, uri, hyperparameters=HYPERPARAMETERS, metadata=METADATA)
    with tarfile.open(uri, "r:gz") as tar:
        # SageMaker's layout: the two files at the archive's root
        assert sorted(tar.getnames()) == ["config.json", "model.safetensors"]
    _assert_same_model(load_model(uri), model, batch)


def test_tar_gz_written_by_hand_in_a_subfolder_loads(
    model: DeepAR, batch: SeriesBatch, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    save_model(model, str(folder), hyperparameters=HYPERPARAMETERS, metadata=METADATA)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="model")  # ./model/config.json, ./model/model.safetensors
    _assert_same_model(load_model(str(archive)), model, batch)


def test_config_json_holds_the_spec(model: DeepAR, tmp_path: Path) -> None:
    save_model(model, str(tmp_path), hyperparameters=HYPERPARAMETERS, metadata=METADATA)
    config = orjson.loads((tmp_path / "config.json").read_bytes())
    assert config["format"] == "batchcast-deepar"
    assert config["format_version"] == 1
    assert config["spec"] == model.spec.to_dict()
    assert config["hyperparameters"] == HYPERPARAMETERS
    assert config["metadata"] == METADATA


def test_weights_are_safetensors_not_a_pickle(model: DeepAR, tmp_path: Path) -> None:
    save_model(model, str(tmp_path))
    path = tmp_path / "model.safetensors"
    head = path.read_bytes()[:2]
    assert head[:1] != b"\x80"  # pickle protocol 2+ opcode
    assert head != b"PK"  # zip: what torch.save writes
    state = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(state)
        for key in f.keys():  # noqa: SIM118  # safe_open handles are not mappings
            assert torch.equal(f.get_tensor(key), state[key])


def test_loads_without_hyperparameters(model: DeepAR, tmp_path: Path) -> None:
    save_model(model, str(tmp_path))
    loaded = load_model(str(tmp_path))
    assert loaded.hyperparameters is None
    assert loaded.metadata == {}


# ---------------------------------------------------------------------------------------------
# Load failures


@pytest.fixture
def saved(model: DeepAR, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    save_model(model, str(folder), hyperparameters=HYPERPARAMETERS)
    return folder


def _edit_config(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = orjson.loads((folder / "config.json").read_bytes())
    edit(config)
    (folder / "config.json").write_bytes(orjson.dumps(config))


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(ModelError, match=f"not a batchcast model: missing.*{name}"):
        load_model(str(saved))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no model"):
        load_model(str(tmp_path / "nowhere.tar.gz"))


def test_config_not_json(saved: Path) -> None:
    (saved / "config.json").write_bytes(b"{not json")
    with pytest.raises(ModelError, match=r"config.json is not valid JSON"):
        load_model(str(saved))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(format="gluonts"), "format must be 'batchcast-deepar'"),
        (lambda c: c.pop("format"), "format must be 'batchcast-deepar'"),
        (lambda c: c.update(format_version=2), "format_version 2 is not supported"),
        (lambda c: c.pop("spec"), "invalid model spec"),
        (lambda c: c.update(spec=None), "invalid model spec"),
        (lambda c: c["spec"].update(likelihood="poisson"), "invalid model spec.*poisson"),
        (lambda c: c["spec"].update(bogus=1), "invalid model spec.*bogus"),
        (lambda c: c["spec"].pop("lags"), "invalid model spec"),
    ],
)
def test_bad_config(saved: Path, edit: Callable[[dict[str, Any]], None], message: str) -> None:
    _edit_config(saved, edit)
    with pytest.raises(ModelError, match=message):
        load_model(str(saved))


def test_config_that_is_not_an_object(saved: Path) -> None:
    (saved / "config.json").write_bytes(b"[1, 2]")
    with pytest.raises(ModelError, match="format"):
        load_model(str(saved))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lags": ["x"]}, "lags"),
        ({"num_cells": 0}, "num_cells"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout_rate": 7.0}, "dropout_rate"),
        # no weight depends on these, so only a bound stops them: each once ran out of memory
        ({"prediction_length": 1_000_000}, "prediction_length must be <= 10000"),
        ({"context_length": 10**9}, "context_length"),
        ({"lags": [1, 2, 10**9]}, "the largest lag"),
        ({"default_scale": -1}, "default_scale must be > 0"),
        ({"default_scale": 0}, "default_scale must be > 0"),
    ],
)
def test_invalid_spec_values_are_model_errors(
    saved: Path, change: dict[str, Any], named: str
) -> None:
    """A spec value that cannot build a network is a broken artifact, not a crash."""
    _edit_config(saved, lambda c: c["spec"].update(change))
    with pytest.raises(ModelError, match=named):
        load_model(str(saved))


def test_weights_that_do_not_match_the_spec(saved: Path, make_model: Callable[..., DeepAR]) -> None:
    other = make_model(num_cells=16)  # a different shape, and no cat embeddings
    save_model(other, str(saved.parent / "other"))
    shutil.copy(saved.parent / "other" / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(ModelError, match="weights do not match the model spec"):
        load_model(str(saved))


def test_corrupt_weights_file(saved: Path) -> None:
    (saved / "model.safetensors").write_bytes(b"\x00\x01garbage" * 8)
    with pytest.raises(ModelError, match="weights"):
        load_model(str(saved))


def test_weights_that_are_a_pickle(saved: Path, model: DeepAR) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    (saved / "model.safetensors").write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match="weights"):
        load_model(str(saved))


def test_tar_gz_that_is_not_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"this is not gzip")
    with pytest.raises(ModelError, match=str(archive)):
        load_model(str(archive))


def test_truncated_tar_gz(model: DeepAR, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    save_model(model, str(archive))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ModelError, match=str(archive)):
        load_model(str(archive))


def test_a_flipped_byte_inside_a_tar_gz_is_a_model_error_not_other_weights(
    model: DeepAR, tmp_path: Path
) -> None:
    """tar stops reading at its end marker, before gzip's CRC: a byte flipped inside the
    weights used to load as a different network, forecasting with exit 0."""
    archive = tmp_path / "model.tar.gz"
    save_model(model, str(archive))
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"not a readable \.tar\.gz"):
        load_model(str(archive))


def test_a_tar_gz_whose_members_unpack_too_large_is_refused_before_unpacking(
    tmp_path: Path,
) -> None:
    """A declared member size is checked before the member is read: a small archive of
    zeros could otherwise ask for tens of GB."""
    archive = tmp_path / "model.tar.gz"
    info = tarfile.TarInfo("model.safetensors")
    info.size = (1 << 30) + 1
    archive.write_bytes(gzip.compress(info.tobuf()))  # a header alone declares the size
    with pytest.raises(ModelError, match="unpack to more than 1073741824 bytes"):
        load_model(str(archive))


def test_tar_gz_without_weights(saved: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(saved / "config.json", arcname="config.json")
    with pytest.raises(ModelError, match=r"missing.*model\.safetensors"):
        load_model(str(archive))


# ---------------------------------------------------------------------------------------------
# S3 (moto's HTTP server on loopback)


@pytest.mark.parametrize("key", ["models/deepar", "models/model.tar.gz"])
def test_s3_round_trip(model: DeepAR, batch: SeriesBatch, s3_bucket: str, key: str) -> None:
    import boto3

    uri = f"s3://{s3_bucket}/{key}"
    save_model(model, uri, hyperparameters=HYPERPARAMETERS, metadata=METADATA)
    listed = boto3.session.Session().client("s3").list_objects_v2(Bucket=s3_bucket)
    keys = sorted(o["Key"] for o in listed["Contents"])
    if key.endswith(".tar.gz"):
        assert keys == [key]
    else:
        assert keys == [f"{key}/config.json", f"{key}/model.safetensors"]
    _assert_same_model(load_model(uri), model, batch)


def test_s3_missing_model(s3_bucket: str) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_model(f"s3://{s3_bucket}/nothing-here")
    with pytest.raises(ModelError):
        load_model(f"s3://{s3_bucket}/nothing-here/model.tar.gz")


def test_forecasts_differ_between_different_models(
    model: DeepAR, batch: SeriesBatch, make_model: Callable[..., DeepAR]
) -> None:
    # guards the round-trip checks above: the forecast bytes do depend on the weights
    other = make_model(
        seed=4, cardinality=(3, 2), embedding_dims=(2, 1), num_dynamic_feat=1, default_scale=4.0
    )
    assert _forecast_bytes(other, batch) != _forecast_bytes(model, batch)
    assert np.frombuffer(_forecast_bytes(model, batch), np.float32).size == 6 * 16 * 4


def test_load_spec_reads_the_configuration_without_the_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_model_dir / CONFIG_NAME, folder / CONFIG_NAME)
    assert load_spec(str(folder)) == load_model(str(tiny_model_dir)).spec
    with pytest.raises(ModelError, match="missing"):
        load_model(str(folder))


def test_an_unreadable_file_is_reported_with_its_cause_not_as_missing(tmp_path: Path) -> None:
    folder = tmp_path / "unreadable"
    (folder / CONFIG_NAME).mkdir(parents=True)  # reading a directory: an OSError, not "missing"
    with pytest.raises(ModelError, match="cannot read") as info:
        load_model(str(folder))
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_layers": 3, "num_cells": 7}, {"cardinality": (3, 2), "embedding_dims": (2, 1)}],
)
def test_state_shapes_are_the_networks(
    make_model: Callable[..., DeepAR], overrides: dict[str, Any]
) -> None:
    """The header check's expectation (computed, nothing built) is the real state dict's."""
    model = make_model(**overrides)
    expected = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    assert list(state_shapes(model.spec)) == expected
