"""Fixtures of the report tests; the helpers behind them are in ``report_cases.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_cases import Case, write_case


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return write_case(tmp_path)
