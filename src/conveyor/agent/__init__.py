"""The agent: checks out code, runs jobs with a backend, reports. Never imports the server."""
