"""Each test starts with no stored logs, uploads or artifacts (see tests/server/logs)."""

from tests.server.logs.conftest import clean_data_dir

__all__ = ["clean_data_dir"]
