"""The security suite runs on conftest's fixtures, with rate limits out of the way."""

from __future__ import annotations

import pytest

from tests.support.settings import GENEROUS_LIMITS


@pytest.fixture
def settings_values(settings_values: dict[str, str]) -> dict[str, str]:
    return {**settings_values, **GENEROUS_LIMITS}
