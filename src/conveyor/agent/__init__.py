"""The agent: checks out code, runs jobs with a backend, reports. Never imports the server."""

EXIT_WITH_PARENT_ENV = "CONVEYOR_AGENT_EXIT_WITH_PARENT"
"""Set, to its own pid, by a server that starts `conveyor agent` as its embedded agent:
the agent then stops when that process dies, even by SIGKILL, instead of running on
alone (also when the server died before the agent got that far)."""
