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
from batchcast.forecast import InferenceConfig, SeriesBatch, build_windows, forecast
from batchcast.forecast.gluonts import normalize_freq
from batchcast.models import import_gluonts, load_model

pytest.importorskip("gluonts")
pytest.importorskip("lightning")

# Only after the importorskip calls above.
from gluonts.dataset.common import ListDataset
from gluonts.torch import distributions
from gluonts.torch.model.deepar import DeepAREstimator

pytestmark = [
    pytest.mark.gluonts,
    # Raised inside lightning and torch while GluonTS trains and predicts. The module-scoped
    # fixtures train during the first test's setup, so every test here carries the filters.
    pytest.mark.filterwarnings(
        "ignore:Using a non-tuple sequence for multidimensional indexing:UserWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
    ),
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
        target = 10 + 3 * (i % 3) + 2 * np.sin(2 * np.pi * t / 24) + rng.normal(size=length)
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


def _dataset(records: list[dict[str, Any]], freq: str = FREQ) -> ListDataset:
    # GluonTS rewrites the dicts it is given (e.g. "start" becomes a pd.Period): hand it copies.
    return ListDataset([dict(r) for r in records], freq=freq)


def _gluonts_unroll(
    predictor: Any, records: list[dict[str, Any]], freq: str = FREQ
) -> dict[str, torch.Tensor]:
    """GluonTS's network over the context, on the batch its own transformation chain makes."""
    entries = list(predictor.input_transform.apply(_dataset(records, freq), is_train=False))
    g = {n: torch.as_tensor(np.stack([e[n] for e in entries])) for n in predictor.input_names}
    inputs = (
        g["feat_static_cat"],
        g["feat_static_real"],
        g["past_time_feat"],
        g["past_target"],
        g["past_observed_values"],
        g["future_time_feat"][:, :1],  # as DeepARModel.forward: the first forecast step's
    )
    net = predictor.prediction_net.model.eval()
    with torch.no_grad():
        x, _, _ = net.prepare_rnn_input(*inputs)
        params, scale, _, _, (h, c) = net.unroll_lagged_rnn(*inputs)
    return {
        "past_target": g["past_target"],
        "past_observed": g["past_observed_values"],
        "x": x,  # (B, C, D_gluonts)
        "scale": scale,
        "params": torch.stack(params, dim=-1),  # (B, C, num_args)
        "h": h,
        "c": c,
    }


def _batchcast_unroll(model: Any, batch: SeriesBatch) -> dict[str, torch.Tensor]:
    """batchcast's network over the context, on ``build_windows`` of the same series."""
    spec = model.spec
    w = build_windows(batch, spec, dummy_value=model.likelihood.value_in_support)
    past_target = torch.from_numpy(w.past_target)
    past_observed = torch.from_numpy(w.past_observed)
    covariates = torch.from_numpy(w.covariates)
    with torch.no_grad():
        params, scale, (h, c), static = model(
            past_target, past_observed, covariates, torch.from_numpy(w.cat)
        )
        x = model.rnn_input(
            past_target / scale.scale, static, covariates[:, : spec.context_length], spec.max_lag
        )
    return {
        "past_target": past_target,
        "past_observed": past_observed,
        "x": x,  # (B, C, D_batchcast)
        "scale": scale.scale,
        "params": params,
        "h": h,
        "c": c,
    }


def _max_param_diffs(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]
) -> dict[str, float]:
    params = (ours["params"] - theirs["params"]).abs()
    return {
        "first_step": params[:, -1].max().item(),
        "context": params.max().item(),
        "state": max((ours[k] - theirs[k]).abs().max().item() for k in ("h", "c")),
    }


# ---------------------------------------------------------------------------------------------
# 1. Same inputs, same distribution parameters


def test_same_parameters_as_gluonts_network(trained: Any) -> None:
    predictor, path, features = trained
    loaded = import_gluonts(str(path))
    spec = loaded.spec
    assert spec.freq == "H"
    assert (spec.cardinality, spec.num_dynamic_feat) == (((3,), 1) if features else ((), 0))
    assert loaded.metadata["imported_from"] == "gluonts"
    records = _eval_records(features=features)
    theirs = _gluonts_unroll(predictor, records)
    ours = _batchcast_unroll(loaded.model, _series_batch(records, features=features))

    # The windows are GluonTS's (values and padding), the scale is identical (the all-NaN
    # context gets the same batch-wide default) and so is every LSTM input but the folded
    # constant columns, up to the age feature's last bit: GluonTS takes log10 in float32,
    # batchcast in float64 before rounding to float32.
    for name in ("past_target", "past_observed", "scale"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)
    k = len(spec.lags)
    # GluonTS's [lags | embeddings | static real | ...]: with features only the static real is
    # a dummy; without, the 1x1 embedding is one too.
    folded = [k + sum(spec.embedding_dims)] if features else [k, k + 1]
    g_x = theirs["x"][..., [i for i in range(theirs["x"].shape[-1]) if i not in folded]]
    age = k + sum(spec.embedding_dims) + 1 + spec.num_time_features
    others = [i for i in range(g_x.shape[-1]) if i != age]
    torch.testing.assert_close(ours["x"][..., others], g_x[..., others], rtol=0, atol=0)
    torch.testing.assert_close(ours["x"][..., age], g_x[..., age], rtol=2**-23, atol=0)

    diffs = _max_param_diffs(ours, theirs)
    print(f"max |param diff| {diffs}")
    assert max(diffs.values()) < 1e-5


@pytest.mark.parametrize("distr", ["NormalOutput", "NegativeBinomialOutput"])
def test_other_likelihoods_and_options(distr: str, tmp_path: Path) -> None:
    """Gaussian and negative-binomial heads, odd lags_seq, a default scale, one layer, 2h.

    The equivalence needs no training: an untrained predictor (random weights) is serialized.
    """
    estimator = DeepAREstimator(
        freq="2h",
        prediction_length=HORIZON,
        context_length=CONTEXT,
        num_layers=1,
        hidden_size=10,
        dropout_rate=0.0,
        lags_seq=[3, 1, 24, 2, 12, 2],  # out of order and repeated: permuted and merged
        default_scale=1.5,
        distr_output=getattr(distributions, distr)(),
    )
    torch.manual_seed(3)
    predictor = estimator.create_predictor(
        estimator.create_transformation(), estimator.create_lightning_module()
    )
    predictor.serialize(tmp_path)
    loaded = import_gluonts(str(tmp_path))
    assert loaded.spec.freq == "2H"
    assert loaded.spec.lags == (1, 2, 3, 12, 24)
    assert loaded.spec.default_scale == 1.5
    assert loaded.spec.likelihood == {"NormalOutput": "gaussian"}.get(distr, "negative-binomial")

    records = _eval_records(features=False)
    theirs = _gluonts_unroll(predictor, records, freq="2h")
    ours = _batchcast_unroll(loaded.model, _series_batch(records, features=False))
    torch.testing.assert_close(ours["scale"], theirs["scale"], rtol=0, atol=0)  # 1.5 for NaNs
    diffs = _max_param_diffs(ours, theirs)
    print(f"{distr}: max |param diff| {diffs}")
    assert max(diffs.values()) < 1e-5


# ---------------------------------------------------------------------------------------------
# 2. Forecasts: medians within Monte-Carlo noise, and the same paths under the same seed


def test_medians_within_monte_carlo_noise(trained: Any) -> None:
    predictor, path, features = trained
    model = import_gluonts(str(path)).model
    records = _eval_records(features=features)
    s = 600
    torch.manual_seed(123)
    theirs = list(predictor.predict(_dataset(records), num_samples=s))
    g_samples = np.stack([f.samples for f in theirs])  # (B, S, P)
    g_median = np.stack([f.quantile(0.5) for f in theirs])  # sorted sample round((S-1)/2)
    ours = forecast(
        model,
        _series_batch(records, features=features),
        InferenceConfig(num_samples=s, output_types=("samples", "quantiles"), quantiles=("0.5",)),
        generator=torch.Generator().manual_seed(456),  # independent of GluonTS's draws
        max_rows=len(records) * s,  # one batch, as GluonTS (the default scale is batch-wide)
    )
    assert ours.samples is not None
    assert ours.quantiles is not None
    median = ours.quantiles[:, 0]  # the same order statistic

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
    g_samples = np.stack([f.samples for f in predictor.predict(_dataset(records))])
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


@pytest.mark.parametrize("trained", ["plain"], indirect=True)  # one model is enough here
def test_import_needs_no_gluonts(trained: Any) -> None:
    """The importer reads data only: it works where gluonts cannot be imported."""
    _, path, _ = trained
    code = (
        "import sys; sys.modules['gluonts'] = None  # any gluonts import now fails\n"
        "from batchcast.models import import_gluonts\n"
        f"print(import_gluonts({str(path)!r}).spec.num_cells)\n"
        "names = [m for m, v in sys.modules.items() if v is not None]\n"
        "loaded = [m for m in names if m.startswith(('gluonts', 'lightning'))]\n"
        "assert not loaded, loaded\n"
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


def _drop_a_time_feature(predictor: dict[str, Any]) -> None:
    for step in predictor["kwargs"]["input_transform"]["kwargs"]["transformations"]:
        if step["class"].endswith("AddTimeFeatures"):
            step["kwargs"]["time_features"].pop()


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
        (_drop_a_time_feature, "time features"),
        (lambda p: _model_kwargs(p).update(hidden_size=16), "do not fit"),
        (lambda p: p.update({"class": "gluonts.model.trivial.mean.MeanPredictor"}), "torch"),
    ],
    ids=[
        "no-scaling",
        "nonnegative",
        "beta",
        "quarterly",
        "static-real",
        "custom-time-features",
        "wrong-hidden-size",
        "other-predictor",
    ],
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
