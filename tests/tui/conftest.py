"""Console test fixtures: the app on the per-test database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from opsconsole.tui.app import OpsConsoleApp
from tests.tui.helpers import RecordingApp


@pytest.fixture
def make_app(db_dsn: str) -> Callable[..., OpsConsoleApp]:
    def make(**kwargs: Any) -> OpsConsoleApp:
        kwargs.setdefault("database_label", "test")
        return RecordingApp(kwargs.pop("dsn", db_dsn), **kwargs)

    return make
