"""Classes over sample paths: the inference configuration's ``classes`` (SPEC.md §8).

A forecast answers classification questions ("will next week's demand reach the stock?")
by binning one number computed from each sample path, its ``aggregate`` over ``steps``,
at ascending ``thresholds``: a path whose aggregate is ``a`` is in class ``j`` = the number
of thresholds ``<= a`` (bins ``(-inf, t1)``, ``[t1, t2)``, …, ``[tk, +inf)``). The class
probabilities are the fractions of paths in each class, computed by :func:`classify` on the
device that holds the paths, so no sample crosses to the host unless ``samples`` is asked for.

This module does not import torch at load time (:func:`classify` imports it when called):
``forecast.config`` holds a :class:`Classes` and must stay torch-free, and ``io`` checks a
record's own thresholds (:func:`record_thresholds`) without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

from batchcast.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "AGGREGATES",
    "CLASS_KEYS",
    "ClassResult",
    "Classes",
    "ThresholdsFieldError",
    "classify",
    "record_thresholds",
    "thresholds_row",
]

AGGREGATES = ("sum", "mean", "max", "min", "last")
# The Autopilot classification keys a ``classes`` configuration answers (SPEC.md §8).
CLASS_KEYS = ("predicted_label", "probability", "probabilities", "labels")
_KNOWN = ("aggregate", "steps", "thresholds", "labels", "thresholds_field")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Classes:
    """Bins over one number per sample path (SPEC.md §8).

    Attributes:
        aggregate: ``sum`` | ``mean`` | ``max`` | ``min`` | ``last`` of each path over ``steps``.
        steps: ``(first, last)``, 1-based and inclusive; None: the whole horizon. Checked
            against the model's horizon by :meth:`step_range` (the horizon is not known here).
        thresholds: k strictly ascending finite numbers shared by every record; empty when
            every record brings its own through ``thresholds_field``.
        labels: the k + 1 distinct class labels, lowest class first (default ``"0"``, ``"1"``,
            …). With ``thresholds_field`` they also fix k (k = len(labels) - 1; default 1).
        thresholds_field: the record field holding that record's own thresholds (a number,
            or an ascending array of k numbers), or None. Exclusive with ``thresholds``: a
            record without the field is a record error, not a fallback to shared thresholds.
    """

    aggregate: str = "sum"
    steps: tuple[int, int] | None = None
    thresholds: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    thresholds_field: str | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ConfigError(
                f"classes.aggregate must be one of {list(AGGREGATES)}, got {self.aggregate!r}"
            )
        if self.steps is not None:
            steps = tuple(self.steps)
            if len(steps) != 2:
                raise ConfigError(f"classes.steps must be [first, last], got {self.steps!r}")
            first, last = (_integer("classes.steps entries", s) for s in steps)
            if not 1 <= first <= last:
                raise ConfigError(
                    f"classes.steps must be [first, last] with 1 <= first <= last, "
                    f"got {[first, last]}"
                )
            object.__setattr__(self, "steps", (first, last))
        if isinstance(self.thresholds, (str, bytes)):
            raise ConfigError(f"classes.thresholds must be an array, got {self.thresholds!r}")
        thresholds = tuple(_number("classes.thresholds entries", t) for t in self.thresholds)
        if any(not a < b for a, b in pairwise(thresholds)):
            raise ConfigError(
                f"classes.thresholds must be strictly ascending, got {list(thresholds)}"
            )
        object.__setattr__(self, "thresholds", thresholds)
        field = self.thresholds_field
        if field is not None and (not isinstance(field, str) or not field):
            raise ConfigError(
                f"classes.thresholds_field must be a record field name, got {field!r}"
            )
        if thresholds and field is not None:
            raise ConfigError(
                f"classes.thresholds and classes.thresholds_field are alternatives, got both "
                f"({list(thresholds)} and {field!r}); with thresholds_field, set the number of "
                "classes with labels"
            )
        if not thresholds and field is None:
            raise ConfigError(
                "classes needs thresholds (an ascending array) or thresholds_field (a record "
                "field holding each record's own thresholds); got neither"
            )
        labels = self.labels
        if isinstance(labels, (str, bytes)) or not all(isinstance(x, str) for x in labels):
            raise ConfigError(f"classes.labels must be an array of strings, got {labels!r}")
        labels = tuple(labels)
        if len(set(labels)) != len(labels):
            raise ConfigError(f"classes.labels must not repeat a label, got {list(labels)}")
        if thresholds:
            k = len(thresholds)
            if labels and len(labels) != k + 1:
                raise ConfigError(
                    f"classes.labels must have {k + 1} entries (one more than the {k} "
                    f"thresholds), got {len(labels)}: {list(labels)}"
                )
        else:
            k = len(labels) - 1 if labels else 1
            if k < 1:
                raise ConfigError(
                    f"classes.labels must have at least 2 entries, got {list(labels)}"
                )
        object.__setattr__(self, "labels", labels or tuple(str(j) for j in range(k + 1)))

    @property
    def num_thresholds(self) -> int:
        """k: each path's aggregate is compared with k thresholds (k + 1 classes)."""
        return len(self.labels) - 1

    def step_range(self, prediction_length: int) -> tuple[int, int]:
        """The 0-based half-open step range ``[lo, hi)`` the aggregate covers.

        Args:
            prediction_length: the model's horizon P.

        Returns:
            ``(lo, hi)`` with ``0 <= lo < hi <= P``.

        Raises:
            ConfigError: when ``steps`` reaches past the horizon.
        """
        if self.steps is None:
            return 0, prediction_length
        first, last = self.steps
        if last > prediction_length:
            raise ConfigError(
                f"classes.steps {[first, last]} reaches past the horizon: steps must lie "
                f"within [1, {prediction_length}] (the model's prediction_length)"
            )
        return first - 1, last

    def label_names(self, predicted: np.ndarray | Sequence[int]) -> list[str]:
        """The label of each predicted class index (e.g. :attr:`ClassResult.predicted`)."""
        labels = self.labels
        return [labels[int(j)] for j in predicted]

    @classmethod
    def from_mapping(cls, data: Any) -> Classes:
        """From the ``classes`` object of an inference configuration; null values are absent.

        ``steps`` may be ``[first, last]`` or one step ``n`` (``[n, n]``).

        Raises:
            ConfigError: for an unknown key or an invalid value, naming the key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"classes must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(_KNOWN))
        if unknown:
            raise ConfigError(f"unknown classes key(s) {unknown}; known: {list(_KNOWN)}")
        kwargs: dict[str, Any] = {}
        if data.get("aggregate") is not None:
            kwargs["aggregate"] = data["aggregate"]
        if data.get("steps") is not None:
            kwargs["steps"] = _steps(data["steps"])
        if data.get("thresholds") is not None:
            kwargs["thresholds"] = tuple(_array("classes.thresholds", data["thresholds"]))
        if data.get("labels") is not None:
            kwargs["labels"] = tuple(_array("classes.labels", data["labels"]))
        if data.get("thresholds_field") is not None:
            kwargs["thresholds_field"] = data["thresholds_field"]
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The ``classes`` object (inverse of :meth:`from_mapping`), for a job's summary."""
        return {
            "aggregate": self.aggregate,
            "steps": None if self.steps is None else list(self.steps),
            "thresholds": list(self.thresholds),
            "labels": list(self.labels),
            "thresholds_field": self.thresholds_field,
        }


def _array(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{name} must be a JSON array, got {value!r}")
    return list(value)


def _steps(value: Any) -> tuple[int, int]:
    items = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    items = _array("classes.steps", items)
    if len(items) != 2:
        raise ConfigError(f"classes.steps must be [first, last] (1-based), got {value!r}")
    return _integer("classes.steps entries", items[0]), _integer("classes.steps entries", items[1])


# ---------------------------------------------------------------------------------------------
# A record's own thresholds (thresholds_field)


class ThresholdsFieldError(ValueError):
    """A record's ``thresholds_field`` is missing or malformed.

    The record decoder turns it into a :class:`~batchcast.errors.RecordError` (it knows the
    URI and the line). ``str(error)`` is the message alone, without the field.

    Args:
        field: the record field (``classes.thresholds_field``).
        message: what was expected and what was found.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


def _expected(k: int) -> str:
    return "a number" if k == 1 else f"a strictly ascending array of {k} finite numbers"


def thresholds_row(value: Any, num_thresholds: int) -> list[float]:
    """A record's own thresholds (the value of its ``thresholds_field``) as k floats.

    Args:
        value: the field's parsed JSON value: a number (only when k = 1), or an array of k
            finite, strictly ascending numbers (``[5]`` is accepted for k = 1 too).
        num_thresholds: k, from :attr:`Classes.num_thresholds`.

    Returns:
        The k thresholds.

    Raises:
        ValueError: with what was expected and what was found (no field name; see
            :func:`record_thresholds`).
    """
    items = value if isinstance(value, list) else [value]
    if len(items) != num_thresholds or not all(
        not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) for x in items
    ):
        found = repr(value)
        found = found if len(found) <= 120 else found[:117] + "..."
        raise ValueError(f"expected {_expected(num_thresholds)}, found {found}")
    row = [float(x) for x in items]
    if any(not a < b for a, b in pairwise(row)):
        raise ValueError(f"expected {_expected(num_thresholds)}, found {row} (not ascending)")
    return row


def record_thresholds(record: Mapping[str, Any], classes: Classes) -> list[float]:
    """The thresholds one input record brings in ``classes.thresholds_field``.

    Args:
        record: the parsed input record (a JSON object).
        classes: a configuration with ``thresholds_field`` set.

    Returns:
        The record's k thresholds (k = ``classes.num_thresholds``).

    Raises:
        ThresholdsFieldError: naming the field, when the record lacks it or its value is not
            k ascending finite numbers.
    """
    field = classes.thresholds_field
    assert field is not None  # the caller only asks when records bring their own thresholds
    k = classes.num_thresholds
    if field not in record:
        raise ThresholdsFieldError(
            field, f"required field is missing (classes.thresholds_field); expected {_expected(k)}"
        )
    try:
        return thresholds_row(record[field], k)
    except ValueError as err:
        raise ThresholdsFieldError(field, str(err)) from None


# ---------------------------------------------------------------------------------------------
# Class probabilities on the device


class ClassResult(NamedTuple):
    """What :func:`classify` computes, as tensors on the samples' device.

    Attributes:
        probabilities: (B, K + 1) float32, the fraction of paths in each class (rows sum to 1).
        predicted: (B,) int64, the most probable class; ties go to the lower class.
        probability: (B,) float32: with two classes, the upper class's probability (the
            aggregate reaches the threshold); with more, the predicted class's.
    """

    probabilities: torch.Tensor
    predicted: torch.Tensor
    probability: torch.Tensor


def classify(
    samples: torch.Tensor,
    classes: Classes,
    *,
    thresholds: torch.Tensor | np.ndarray | None = None,
) -> ClassResult:
    """Class probabilities of each series from its sample paths, on the paths' device.

    Each path's aggregate is taken in float64, and compared with float64 thresholds, so that
    a path's class does not depend on the summation order or on rounding a threshold to
    float32: recomputing it on the host from the written samples gives the same classes. A
    path holding NaN (a sound model never draws one) compares below every threshold and
    counts in the lowest class.

    Args:
        samples: (B, S, P) sample paths.
        classes: the bins; ``steps`` must lie within P.
        thresholds: (B, k) per-record thresholds (``thresholds_field``; each row strictly
            ascending, as :func:`thresholds_row` guarantees), or (k,) for every series; None
            uses ``classes.thresholds``. Moved to the samples' device.

    Returns:
        The :class:`ClassResult`, on the samples' device.

    Raises:
        ConfigError: when ``classes.steps`` reaches past P.
        ValueError: when per-record thresholds are needed but not given, or their shape is
            not (B, k) or (k,) (a bug in the caller, not a user error).
    """
    import torch  # at call time: see the module docstring

    b, s, p = samples.shape
    k = classes.num_thresholds
    lo, hi = classes.step_range(p)
    if thresholds is None:
        if classes.thresholds_field is not None:
            raise ValueError(
                f"classes.thresholds_field={classes.thresholds_field!r}: "
                "per-record thresholds must be given"
            )
        thresholds = torch.tensor(classes.thresholds, dtype=torch.float64)
    edges = torch.as_tensor(thresholds).to(samples.device, torch.float64)
    if edges.ndim == 1:
        edges = edges.expand(b, -1)
    if tuple(edges.shape) != (b, k):
        raise ValueError(f"thresholds must be ({b}, {k}) or ({k},), got {tuple(edges.shape)}")
    window = samples[:, :, lo:hi].to(torch.float64)  # (B, S, W)
    aggregate = _aggregate(window, classes.aggregate)  # (B, S)
    # reached[:, j]: paths whose aggregate reaches threshold j + 1. Ascending thresholds make
    # it non-increasing in j, so the class counts are its successive differences.
    reached = (aggregate[:, :, None] >= edges[:, None, :]).sum(dim=1)  # (B, k) int64
    bounds = torch.cat(
        (reached.new_full((b, 1), s), reached, reached.new_zeros((b, 1))), dim=1
    )  # (B, k + 2)
    counts = bounds[:, :-1] - bounds[:, 1:]  # (B, k + 1)
    # Counts <= 2**24 are exact in float32, and one float32 division rounds count / S
    # correctly: the same value as the host's float64 count / S rounded to float32.
    probabilities = counts.to(torch.float32) / s
    predicted = counts.argmax(dim=1)  # torch's argmax returns the first maximum: the lower class
    if k == 1:
        probability = probabilities[:, 1]
    else:
        probability = probabilities.gather(1, predicted[:, None]).squeeze(1)
    return ClassResult(probabilities, predicted, probability)


def _aggregate(window: torch.Tensor, how: str) -> torch.Tensor:
    """One number per path: window (B, S, W) -> (B, S)."""
    if how == "sum":
        return window.sum(dim=-1)
    if how == "mean":
        return window.mean(dim=-1)
    if how == "max":
        return window.amax(dim=-1)
    if how == "min":
        return window.amin(dim=-1)
    assert how == "last", how  # Classes validates the name
    return window[:, :, -1]
