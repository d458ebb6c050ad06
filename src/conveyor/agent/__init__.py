"""The agent: checks out code, runs jobs with a backend, reports. Never imports the server."""

from pathlib import Path

EXIT_WITH_PARENT_ENV = "CONVEYOR_AGENT_EXIT_WITH_PARENT"
"""Set, to its own pid, by a server that starts `conveyor agent` as its embedded agent:
the agent then stops when that process dies, even by SIGKILL, instead of running on
alone (also when the server died before the agent got that far)."""


def cache_dir_of(work_dir: Path) -> Path:
    """What `conveyor agent --work-dir DIR` keeps between jobs (mirrors), under DIR."""
    return work_dir / "cache"


def mirrors_dir_of(cache_dir: Path) -> Path:
    """Where an agent keeps its bare mirrors (`checkout.MirrorCache`), under its cache."""
    return cache_dir / "mirrors"
