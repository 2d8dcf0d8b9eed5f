"""The driver holds a bounded number of output bytes, not only of shards (issue 9.2).

With ``samples`` output a shard's output is ``num_samples x prediction_length`` numbers per
series: a window of shards is no memory bound. The window now also counts output bytes
(``max_held_mb``): shards in flight (estimated from the output/input ratio seen) plus results
held for order. A budget below one shard's output lets one shard through at a time; the
output's bytes never depend on it. A child process shows the driver's peak RSS stays far
below the output it wrote.
"""

from __future__ import annotations

from pathlib import Path

from rss import transform_rss_growth

from batchcast.api import transform
from batchcast.synthetic import synthetic_records, write_jsonl

_SAMPLES = {"num_samples": 1000, "output_types": ["samples"]}
_SHARD_MB = 0.01  # a few dozen series a shard: many shards, each ~1 MB of samples


def test_a_small_budget_holds_one_shard_and_changes_no_byte(
    tiny_model: str, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", synthetic_records(300, freq="H", length=(20, 40)))
    common = {"inference": _SAMPLES, "shard_mb": _SHARD_MB, "workers": 2, "executor": "local"}
    small = transform(tiny_model, str(data), str(tmp_path / "small"), max_held_mb=0.001, **common)
    wide = transform(tiny_model, str(data), str(tmp_path / "wide"), **common)
    assert small.ok
    assert wide.ok
    out = (tmp_path / "small/a.jsonl.out").read_bytes()
    assert out == (tmp_path / "wide/a.jsonl.out").read_bytes()
    shards = small.counts["shards"]
    assert shards >= 8
    assert small.counts["window_bytes"] == 1048  # int(0.001 MiB)
    # One shard a worker until the first result gives the output's size, then one at a time:
    # every shard's output is over the budget.
    assert small.counts["peak_shards_held"] == 2
    assert 0 < small.counts["peak_bytes_held"] < 4 * len(out) / shards  # about one shard's
    assert wide.counts["window_bytes"] == 256 * 1024 * 1024  # the documented default
    assert wide.counts["peak_shards_held"] > 2


def test_peak_rss_stays_far_below_the_output(tiny_model: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", synthetic_records(1500, freq="H", length=(20, 40)))
    warm = write_jsonl(tmp_path / "warm.jsonl", synthetic_records(40, freq="H", length=(20, 40)))
    result = transform_rss_growth(
        tiny_model,
        warm,
        data,
        tmp_path / "out",
        inference=_SAMPLES,
        shard_mb=0.01,
        workers=2,
        executor="local",
        max_held_mb=4,
    )
    written = (tmp_path / "out/a.jsonl.out").stat().st_size
    assert written > 50 * 1024 * 1024  # samples: num_samples x horizon numbers a series
    assert result["counts"]["peak_bytes_held"] <= 4 * 1024 * 1024 + written / 10
    # After a small warm-up job (imports, torch, threads), the peak grows by what the job
    # holds at once, not by what it writes.
    assert result["grew_kb"] * 1024 < written / 4, result
