"""SageMaker's training channels: the same JSON Lines, read whole into one batch.

:func:`load_training_channels` reads the ``train`` channel and the optional ``test`` channel
for a :class:`~batchcast.forecast.config.DeepARConfig`; :func:`load_training_data` reads one
channel with given feature settings. In training a ``dynamic_feat`` array is as long as its
``target`` (no future values).

``cardinality`` and ``num_dynamic_feat`` keep SageMaker's three forms. ``"auto"`` uses a
feature only if every record has it (and fails when some records have it and others do
not), so the data is scanned for the fields first and then decoded against the resolved
contract: like a CSV reader's schema inference, ``auto`` costs a second parse of the
channel; explicit and ``ignore`` settings read it once. The test channel is decoded with
the features the training channel resolved to.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchcast.coerce import as_choice_or_int, as_choice_or_ints
from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import DeepARConfig
from batchcast.forecast.series import SeriesBatch
from batchcast.io.records import decode_records, parse_line
from batchcast.io.shards import Shard, read_shard_lines
from batchcast.io.sources import list_inputs
from batchcast.io.validation import UNBOUNDED, FieldError, RecordContract

__all__ = ["TrainingChannels", "TrainingData", "load_training_channels", "load_training_data"]

# How many bad records a training error lists (all are counted).
_SHOWN_ERRORS = 20


@dataclass
class TrainingData:
    """A training channel, decoded.

    Attributes:
        batch: every series, in file then line order.
        cardinality: the resolved cardinality (empty: no categorical features).
        num_dynamic_feat: the resolved number of dynamic features.
    """

    batch: SeriesBatch
    cardinality: tuple[int, ...]
    num_dynamic_feat: int


@dataclass
class TrainingChannels:
    """What a training job reads.

    Attributes:
        train: the training channel and the features it resolved.
        test: the test channel's series (decoded with ``train``'s features), or None.
    """

    train: TrainingData
    test: SeriesBatch | None


def load_training_channels(
    train: str | Sequence[str], *, config: DeepARConfig, test: str | Sequence[str] | None = None
) -> TrainingChannels:
    """Read the ``train`` channel, and the ``test`` channel with the features ``train`` resolved.

    Args:
        train: the training inputs (one or several files, folders, globs, S3 prefixes).
        config: the hyperparameters (``prediction_length``, ``cardinality``,
            ``num_dynamic_feat``).
        test: the optional test inputs; a feature ``train`` does not use is ignored there.

    Returns:
        Both channels.

    Raises:
        ConfigError, ShardError: as :func:`load_training_data`, for either channel.
    """
    data = load_training_data(
        _as_list(train),
        prediction_length=config.prediction_length,
        cardinality=config.cardinality,
        num_dynamic_feat=config.num_dynamic_feat,
    )
    test_batch = None
    if test is not None:
        test_batch = load_training_data(
            _as_list(test),
            prediction_length=config.prediction_length,
            cardinality=data.cardinality or "ignore",
            num_dynamic_feat=data.num_dynamic_feat or "ignore",
            channel="test",
        ).batch
    return TrainingChannels(train=data, test=test_batch)


def _as_list(inputs: str | Sequence[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


def load_training_data(
    uris: Sequence[str],
    *,
    prediction_length: int,
    cardinality: str | Sequence[int],
    num_dynamic_feat: str | int,
    channel: str = "training",
) -> TrainingData:
    """Read one training channel.

    Args:
        uris: inputs as :func:`list_inputs` takes them (files, folders, globs, S3 prefixes).
        prediction_length: the model's horizon.
        cardinality: ``"auto"`` (use ``cat`` if every record has it; each feature's
            cardinality is its largest value + 1), ``"ignore"`` (drop it), or explicit.
        num_dynamic_feat: ``"auto"`` (use ``dynamic_feat`` if every record has it),
            ``"ignore"``, or explicit.
        channel: what errors call the data (``"training"`` or ``"test"``).

    Returns:
        The series and the resolved cardinality and dynamic-feature count.

    Raises:
        ConfigError: for bad records (listing up to 20), a field that ``auto`` finds in some
            records but not others, no records at all, or an invalid setting.
        ShardError: when an input cannot be read.
    """
    if isinstance(uris, str) or not uris:
        raise ConfigError(f"the {channel} channel must be a non-empty list of inputs, got {uris!r}")
    cardinality = as_choice_or_ints("cardinality", cardinality)
    num_dynamic_feat = as_choice_or_int("num_dynamic_feat", num_dynamic_feat)
    files = _read_lines(uris)
    fields = _Presence(files) if "auto" in (cardinality, num_dynamic_feat) else None
    contract = RecordContract(
        prediction_length=prediction_length,
        cardinality=_resolve_cardinality(cardinality, fields),
        num_dynamic_feat=_resolve_num_dynamic_feat(num_dynamic_feat, fields),
    )
    batches, errors = [], []
    for uri, lines in files:
        decoded = decode_records(lines, uri=uri, contract=contract, max_payload_mb=None)
        batches.append(decoded.batch)
        errors.extend(decoded.errors)
    if errors:
        raise ConfigError(_bad_records(errors, channel))
    batch = _concat(batches, contract)
    if batch.num_series == 0:
        raise ConfigError(f"the {channel} data {list(uris)} holds no records")
    resolved = contract.cardinality
    if cardinality == "auto" and resolved:
        resolved = tuple(int(c) for c in batch.cat.max(axis=0) + 1)
    return TrainingData(batch, resolved, contract.num_dynamic_feat)


def _bad_records(errors: Sequence[RecordError], channel: str) -> str:
    shown = "\n".join(f"  {e}" for e in errors[:_SHOWN_ERRORS])
    more = len(errors) - _SHOWN_ERRORS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"the {channel} data has {len(errors)} bad record(s):\n{shown}{tail}"


def _read_lines(uris: Sequence[str]) -> list[tuple[str, list[bytes]]]:
    files = []
    for spec in uris:
        for obj in list_inputs(spec):
            # The whole object as one shard; no line is too long to train on.
            shard = Shard(
                file_index=0,
                uri=obj.uri,
                start=0,
                end=obj.size,
                index=0,
                count=1,
                compressed=obj.compressed,
            )
            files.append((obj.uri, read_shard_lines(shard, max_line_bytes=1 << 62).lines))
    return files


class _Presence:
    """Which records hold ``cat`` and ``dynamic_feat``: the scan ``auto`` needs.

    For each field: where it was first found and first missed (uri, 1-based line), and the
    first value found (its length fixes the count). Lines that do not parse, and values that
    are not objects, are skipped here: the decoding pass reports them.
    """

    FIELDS = ("cat", "dynamic_feat")

    def __init__(self, files: Sequence[tuple[str, list[bytes]]]) -> None:
        self.have: dict[str, tuple[str, int]] = {}
        self.lack: dict[str, tuple[str, int]] = {}
        self.first: dict[str, Any] = {}
        for uri, lines in files:
            for i, line in enumerate(lines):
                try:
                    value = parse_line(line, limit=sys.maxsize)
                except FieldError:
                    continue
                if type(value) is dict:
                    self._note(value, (uri, i + 1))

    def _note(self, record: dict[str, Any], where: tuple[str, int]) -> None:
        for field in self.FIELDS:
            if field in record:
                if field not in self.have:
                    self.have[field], self.first[field] = where, record[field]
            else:
                self.lack.setdefault(field, where)

    def present(self, field: str) -> bool:
        """Whether every object record has ``field``.

        Raises:
            ConfigError: when some records have it and others do not.
        """
        have, lack = self.have.get(field), self.lack.get(field)
        if have and lack:
            raise ConfigError(
                f"{field!r} must be in every record or in none ('auto' uses it only then): "
                f"{have[0]}:{have[1]} has it, {lack[0]}:{lack[1]} does not"
            )
        return have is not None


def _resolve_cardinality(
    setting: str | tuple[int, ...], fields: _Presence | None
) -> tuple[int, ...]:
    if not isinstance(setting, str):
        return setting
    if setting == "ignore":
        return ()
    assert fields is not None  # scanned whenever a setting is "auto"
    if not fields.present("cat"):
        return ()
    first = fields.first["cat"]
    n = len(first) if isinstance(first, list) else 0
    if n == 0:
        raise ConfigError(f"cardinality 'auto': 'cat' must be a non-empty array, found {first!r}")
    # Only the bound is unknown until the data is read; validation still checks the count.
    return (UNBOUNDED,) * n


def _resolve_num_dynamic_feat(setting: str | int, fields: _Presence | None) -> int:
    if not isinstance(setting, str):
        return setting
    if setting == "ignore":
        return 0
    assert fields is not None  # scanned whenever a setting is "auto"
    first = fields.first.get("dynamic_feat")
    return len(first) if fields.present("dynamic_feat") and isinstance(first, list) else 0


def _concat(batches: Sequence[SeriesBatch], contract: RecordContract) -> SeriesBatch:
    if len(batches) == 1:
        return batches[0]
    return SeriesBatch.from_lists(
        start=np.concatenate([b.start for b in batches]),
        targets=[b.series(k) for b in batches for k in range(b.num_series)],
        cat=np.concatenate([b.cat for b in batches]),
        dynamic=[b.dynamic(k) for b in batches for k in range(b.num_series)],
        num_dynamic_feat=contract.num_dynamic_feat,
        num_cat=len(contract.cardinality),
    )
