"""The servers of these tests live for a module while each test's rows are deleted, so
ids come back; each test also starts with no stored logs or uploads."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from conveyor.server.config import Settings
from conveyor.server.logs import service


@pytest.fixture
def clean_data_dir(server_settings: Settings) -> Iterator[None]:
    yield
    service.open_logs.close_all()
    for folder in ("logs", "uploads", "artifacts"):
        shutil.rmtree(server_settings.data_dir / folder, ignore_errors=True)
