"""SageMaker's ``time_freq``: an integer multiple of a base unit (``5min``, ``2H``, ``D``).

The units are SageMaker DeepAR's: minutes, hours, days, weeks (ending on Sunday, as pandas'
``W``) and months. Lags and time features are chosen from it
(:mod:`batchcast.forecast.features`); the GluonTS importer maps pandas' spellings onto it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from batchcast.errors import ConfigError

__all__ = ["FreqUnit", "Frequency", "parse_frequency"]

FreqUnit = Literal["min", "H", "D", "W", "M"]
_FREQ_RE = re.compile(r"^\s*(\d*)\s*(min|H|D|W|M)\s*$")


@dataclass(frozen=True)
class Frequency:
    """A SageMaker ``time_freq``: an integer ``multiple`` of a base ``unit``.

    Attributes:
        multiple: how many units one step spans (>= 1).
        unit: ``min``, ``H``, ``D``, ``W`` or ``M``.
    """

    multiple: int
    unit: FreqUnit

    def __str__(self) -> str:
        return self.unit if self.multiple == 1 else f"{self.multiple}{self.unit}"


def parse_frequency(value: str) -> Frequency:
    """Parse ``time_freq``: ``min``, ``H``, ``D``, ``W`` or ``M`` times an integer (``5min``).

    Args:
        value: the text, e.g. ``"15min"``, ``"H"``, ``"2D"``.

    Returns:
        The frequency (``"1H"`` and ``"H"`` give the same value).

    Raises:
        ConfigError: naming the value and the accepted forms.
    """
    match = _FREQ_RE.match(str(value))
    if match is None or (match.group(1) and int(match.group(1)) < 1):
        raise ConfigError(
            f"time_freq must be an integer multiple of min, H, D, W or M (e.g. '5min', '2H', 'D'), "
            f"got {value!r}"
        )
    multiple = int(match.group(1)) if match.group(1) else 1
    return Frequency(multiple, cast(FreqUnit, match.group(2)))  # the regex admits only FreqUnit
