"""Fixtures of the serve tests: the tiny models, saved once per session.

Helpers the test modules import live in ``serve_cases.py``.
"""

from __future__ import annotations

import pytest
from serve_cases import save_tiny_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A student-T model: forecasts are random draws, seeded by the request path's rule."""
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "student-t", "student-T")


@pytest.fixture(scope="session")
def point_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A deterministic-L1 model: no randomness, so a series' forecast depends on it alone."""
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "point", "deterministic-L1")
