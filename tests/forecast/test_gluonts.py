"""The GluonTS importer: an imported model computes what GluonTS's own network computes.

Two tiny GluonTS torch DeepAR models are trained once per module (hourly, C=12, P=6): one with
a categorical feature (cardinality 3) and a dynamic real feature, one with neither (so GluonTS
feeds its dummy embedding and dummy static real, which the importer folds into the LSTM bias).
Both are compared against GluonTS on the same series, including scattered NaNs, a series
shorter than the context, a context that is all NaN (the batch-wide default scale) and a start
that is not on the hour.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from batchcast.errors import ModelError
from batchcast.forecast import InferenceConfig, SeriesBatch, build_windows, forecast, load_model
from batchcast.forecast.gluonts import import_gluonts, normalize_freq

pytest.importorskip("gluonts")
pytest.importorskip("lightning")

from gluonts.dataset.common import ListDataset  # noqa: E402  # only after the importorskip
from gluonts.torch.model.deepar import DeepAREstimator  # noqa: E402

pytestmark = [
    pytest.mark.gluonts,
    # Emitted by torch, lightning and gluonts internals while training and predicting; the
    # module-scoped fixtures run inside the first test, so every test carries the filters.
    pytest.mark.filterwarnings("ignore:Using a non-tuple sequence for multidimensional indexing"),
    pytest.mark.filterwarnings("ignore:.*treespec.*:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last"),
]

FREQ = "h"
HORIZON = 6
CONTEXT = 12


# ---------------------------------------------------------------------------------------------
# Data and models


def _train_records(*, features: bool) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        t = np.arange(120)
        dyn = rng.normal(size=120).astype(np.float32)
        target = 10 + 3 * (i % 3) + 2 * np.sin(2 * np.pi * t / 24) + rng.normal(size=120)
        record: dict[str, Any] = {"start": "2021-01-01 00:00", "target": target.astype(np.float32)}
        if features:
            record["target"] = (target + dyn).astype(np.float32)
            record["feat_static_cat"] = [i % 3]
            record["feat_dynamic_real"] = dyn[None, :]
        records.append(record)
    return records


def _eval_records(*, features: bool) -> list[dict[str, Any]]:
    """Series with the edge cases: long, NaNs, shorter than C, all-NaN context, odd start."""
    rng = np.random.default_rng(1)
    specs = [  # (start, length, NaN positions)
        ("2021-01-01 00:00", 800, []),
        ("2021-02-01 05:00", 60, [3, 17, 50, 58]),
        ("2021-02-03 00:00", 8, [2]),
        ("2021-03-01 00:00", 40, list(range(28, 40))),
        ("2021-03-05 07:30", 30, []),
    ]
    records = []
    for i, (start, length, nans) in enumerate(specs):
        t = np.arange(length)
        target = (10 + 3 * (i % 3) + 2 * np.sin(2 * np.pi * t / 24) + rng.normal(size=length))
        target = target.astype(np.float32)
        target[nans] = np.nan
        record: dict[str, Any] = {"start": start, "target": target}
        if features:
            record["feat_static_cat"] = [i % 3]
            record["feat_dynamic_real"] = rng.normal(size=(1, length + HORIZON)).astype(np.float32)
        records.append(record)
    return records


def _series_batch(records: list[dict[str, Any]], *, features: bool) -> SeriesBatch:
    return SeriesBatch.from_lists(
        start=[np.datetime64(r["start"], "s").astype(np.int64) for r in records],
        targets=[r["target"] for r in records],
        cat=[r["feat_static_cat"] for r in records] if features else None,
        dynamic=[r["feat_dynamic_real"].T for r in records] if features else None,  # (T+P, 1)
        num_dynamic_feat=1 if features else 0,
    )


def _train(root: Path, *, features: bool) -> tuple[Any, Path]:
    torch.manual_seed(0)
    np.random.seed(0)
    estimator = DeepAREstimator(
        freq=FREQ,
        prediction_length=HORIZON,
        context_length=CONTEXT,
        num_layers=2,
        hidden_size=12,
        num_feat_static_cat=1 if features else 0,
        cardinality=[3] if features else None,
        num_feat_dynamic_real=1 if features else 0,
        batch_size=16,
        num_batches_per_epoch=3,
        trainer_kwargs={
            "max_epochs": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            # GluonTS always adds a ModelCheckpoint callback, so checkpointing cannot be
            # disabled (lightning refuses); its file goes under this folder instead.
            "default_root_dir": str(root / "lightning"),
        },
    )
    predictor = estimator.train(ListDataset(_train_records(features=features), freq=FREQ))
    path = root / "predictor"
    path.mkdir()
    predictor.serialize(path)
    return predictor, path


@pytest.fixture(scope="module", params=["features", "plain"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(GluonTS predictor, its serialized folder, features?) for both models."""
    features = request.param == "features"
    predictor, path = _train(tmp_path_factory.mktemp(request.param), features=features)
    return predictor, path, features


def _gluonts_inputs(predictor: Any, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The batch GluonTS's own transformation chain feeds its network."""
    entries = list(predictor.input_transform.apply(ListDataset(records, freq=FREQ), is_train=False))
    return {name: torch.as_tensor(np.stack([e[name] for e in entries])) for name in predictor.input_names}


def _constant_columns(spec: Any, *, features: bool) -> list[int]:
    """GluonTS's LSTM input columns the importer folds: [lags | emb | static real | ...]."""
    k = len(spec.lags)
    if features:
        return [k + sum(spec.embedding_dims)]  # the dummy static real
    return [k, k + 1]  # the dummy 1x1 embedding and the dummy static real


# ---------------------------------------------------------------------------------------------
# 1. Same inputs, same distribution parameters


def test_same_parameters_as_gluonts_network(trained: Any) -> None:
    predictor, path, features = trained
    loaded = import_gluonts(str(path))
    model, spec = loaded.model, loaded.spec
    assert spec.freq == "H"
    assert (spec.cardinality, spec.num_dynamic_feat) == (((3,), 1) if features else ((), 0))
    assert loaded.metadata["imported_from"] == "gluonts"

    records = _eval_records(features=features)
    g = _gluonts_inputs(predictor, records)
    net = predictor.prediction_net.model.eval()
    with torch.no_grad():
        g_x, g_scale, _ = net.prepare_rnn_input(
            g["feat_static_cat"],
            g["feat_static_real"],
            g["past_time_feat"],
            g["past_target"],
            g["past_observed_values"],
            g["future_time_feat"][:, :1],
        )
        g_params, _, _, _, (g_h, g_c) = net.unroll_lagged_rnn(
            g["feat_static_cat"],
            g["feat_static_real"],
            g["past_time_feat"],
            g["past_target"],
            g["past_observed_values"],
            g["future_time_feat"][:, :1],
        )
    g_params = torch.stack(g_params, dim=-1)  # (B, C, num_args)

    w = build_windows(_series_batch(records, features=features), spec)
    past_target = torch.from_numpy(w.past_target)
    past_observed = torch.from_numpy(w.past_observed)
    covariates = torch.from_numpy(w.covariates)
    cat = torch.from_numpy(w.cat)
    with torch.no_grad():
        params, scale, (h, c), static = model(past_target, past_observed, covariates, cat)
        x = model.rnn_input(past_target / scale, static, covariates[:, :CONTEXT], spec.max_lag)

    # The windows are GluonTS's (values and padding), the scale is identical (the all-NaN
    # context gets the same batch-wide default) and so is every LSTM input but the folded
    # constant columns.
    torch.testing.assert_close(past_target, g["past_target"], rtol=0, atol=0)
    torch.testing.assert_close(past_observed, g["past_observed_values"], rtol=0, atol=0)
    torch.testing.assert_close(scale, g_scale, rtol=0, atol=0)
    keep = [i for i in range(g_x.shape[-1]) if i not in _constant_columns(spec, features=features)]
    torch.testing.assert_close(x, g_x[..., keep], rtol=0, atol=0)

    diff_all = (params - g_params).abs().max().item()
    diff_first = (params[:, -1] - g_params[:, -1]).abs().max().item()
    print(f"max |param diff|: whole context {diff_all:.2e}, first forecast step {diff_first:.2e}")
    assert diff_first < 1e-5
    assert diff_all < 1e-5
    assert max((h - g_h).abs().max().item(), (c - g_c).abs().max().item()) < 1e-5


# ---------------------------------------------------------------------------------------------
# 2. Forecasts: medians within Monte-Carlo noise, and the same paths under the same seed


def test_medians_within_monte_carlo_noise(trained: Any) -> None:
    predictor, path, features = trained
    model = import_gluonts(str(path)).model
    records = _eval_records(features=features)
    s = 1000
    torch.manual_seed(123)
    g_samples = np.stack(
        [f.samples for f in predictor.predict(ListDataset(records, freq=FREQ), num_samples=s)]
    )  # (B, S, P)
    ours = forecast(
        model,
        _series_batch(records, features=features),
        InferenceConfig(num_samples=s, output_types=("samples", "quantiles"), quantiles=("0.5",)),
        generator=torch.Generator().manual_seed(456),  # independent of GluonTS's draws
        max_rows=len(records) * s,  # one batch, as GluonTS (the default scale is batch-wide)
    )
    assert ours.samples is not None and ours.quantiles is not None
    # GluonTS's median is the order statistic at round((S-1)/2); so is ours.
    g_median = np.sort(g_samples, axis=1)[:, round((s - 1) * 0.5)]
    median = ours.quantiles[:, 0]

    # The sample median of S draws has standard error 1 / (2 f(m) sqrt(S)), f the density at
    # the median. In IQR units that is 0.93 IQR/sqrt(S) for a normal and 0.79 for a Cauchy,
    # so <= 0.93 for every Student-T (df > 2 here); the difference of two independent
    # medians has <= sqrt(2) * 0.93 = 1.32 IQR/sqrt(S). 5 IQR/sqrt(S) is 3.8 such standard
    # errors: a false alarm somewhere among the 2 x 5 x 6 points has probability ~1%.
    def iqr(x: np.ndarray) -> np.ndarray:
        q75, q25 = np.percentile(x, [75, 25], axis=1)
        return np.asarray(q75 - q25)

    noise = 0.5 * (iqr(g_samples) + iqr(ours.samples)) / math.sqrt(s)  # (B, P)
    ratio = np.abs(median - g_median) / noise
    print(
        f"median |diff| max {np.abs(median - g_median).max():.4f}, in IQR/sqrt(S) units: "
        f"max {ratio.max():.2f}, mean {ratio.mean():.2f}"
    )
    assert ratio.max() < 5.0


def test_same_seed_gives_gluonts_paths(trained: Any) -> None:
    """With the same seed both draw the same random numbers in the same order."""
    predictor, path, features = trained
    model = import_gluonts(str(path)).model
    records = _eval_records(features=features)
    torch.manual_seed(7)
    g_samples = np.stack([f.samples for f in predictor.predict(ListDataset(records, freq=FREQ))])
    ours = forecast(
        model,
        _series_batch(records, features=features),
        InferenceConfig(num_samples=100, output_types=("samples",)),
        generator=torch.Generator().manual_seed(7),
    )
    assert ours.samples is not None
    # Not bitwise: the sampler's fused LSTM rounds differently (DEEPAR_REFERENCE.md A.13).
    diff = np.abs(ours.samples - g_samples)
    print(f"same-seed paths: max |diff| {diff.max():.2e}")
    np.testing.assert_allclose(ours.samples, g_samples, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# 3. Saving


def test_saved_import_loads_identically(trained: Any, tmp_path: Path) -> None:
    _, path, _ = trained
    imported = import_gluonts(str(path), model_dir=str(tmp_path / "model"))
    loaded = load_model(str(tmp_path / "model"))
    assert loaded.spec == imported.spec
    assert loaded.metadata == {"imported_from": "gluonts", "gluonts_version": "0.17.0"}
    ours, theirs = imported.model.state_dict(), loaded.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_import_needs_no_gluonts(trained: Any) -> None:
    """The importer reads data only: it works where gluonts cannot be imported."""
    _, path, _ = trained
    code = (
        "import sys; sys.modules['gluonts'] = None  # any gluonts import now fails\n"
        "from batchcast.forecast.gluonts import import_gluonts\n"
        f"print(import_gluonts({str(path)!r}).spec.num_cells)\n"
        "assert not [m for m in sys.modules if m.startswith(('gluonts', 'lightning'))]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12"


# ---------------------------------------------------------------------------------------------
# 4. What is rejected


def _doctored(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    shutil.copytree(src, dst)
    predictor = json.loads((dst / "predictor.json").read_text())
    edit(predictor)
    (dst / "predictor.json").write_text(json.dumps(predictor))
    return str(dst)


def _model_kwargs(predictor: dict[str, Any]) -> dict[str, Any]:
    return predictor["kwargs"]["prediction_net"]["kwargs"]["model_kwargs"]


def _drop_dummy_static_real(predictor: dict[str, Any]) -> None:
    steps = predictor["kwargs"]["input_transform"]["kwargs"]["transformations"]
    steps[:] = [
        t for t in steps if t["kwargs"].get("output_field") != "feat_static_real"
    ]  # as if the estimator had num_feat_static_real=1


_BETA = {
    "__kind__": "instance",
    "args": [],
    "class": "gluonts.torch.distributions.distribution_output.BetaOutput",
    "kwargs": {},
}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: _model_kwargs(p).update(scaling=False), "scaling=False"),
        (lambda p: _model_kwargs(p).update(nonnegative_pred_samples=True), "nonnegative"),
        (lambda p: _model_kwargs(p).update(distr_output=_BETA), "BetaOutput"),
        (lambda p: _model_kwargs(p).update(freq="Q"), "frequency 'Q'"),
        (_drop_dummy_static_real, "real static feature"),
        (lambda p: p.update({"class": "gluonts.model.trivial.mean.MeanPredictor"}), "torch"),
    ],
    ids=["no-scaling", "nonnegative", "beta", "quarterly", "static-real", "other-predictor"],
)
def test_unsupported_models_are_rejected(
    trained: Any, tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    _, path, _ = trained
    with pytest.raises(ModelError, match=message):
        import_gluonts(_doctored(path, tmp_path / "doctored", edit))


class _Payload:
    """Anything a pickle could smuggle in: torch's weights-only unpickler refuses the class."""


def test_state_that_is_not_plain_tensors_is_refused(trained: Any, tmp_path: Path) -> None:
    _, path, _ = trained
    dst = tmp_path / "pickled"
    shutil.copytree(path, dst)
    torch.save({"model.rnn.weight_ih_l0": _Payload()}, dst / "prediction-net-state.pt")
    with pytest.raises(ModelError, match="not a plain tensor state dict"):
        import_gluonts(str(dst))


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"predictor\.json is missing"):
        import_gluonts(str(tmp_path))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("h", "H"),
        ("H", "H"),
        ("2h", "2H"),
        ("1H", "H"),
        ("T", "min"),
        ("15min", "15min"),
        ("ME", "M"),
        ("M", "M"),
        ("W-SUN", "W"),
        ("W", "W"),
        ("D", "D"),
    ],
)
def test_frequencies_take_sagemaker_spelling(given: str, expected: str) -> None:
    assert str(normalize_freq(given)) == expected


@pytest.mark.parametrize("given", ["Q", "B", "W-MON", "S", "0H", "5"])
def test_other_frequencies_are_rejected(given: str) -> None:
    with pytest.raises(ModelError, match="frequency"):
        normalize_freq(given)
