"""Where step logs live: `<data_dir>/logs/<run id>/<job id>/<step index>.log` for a
job's first attempt, `<step index>.attempt-<n>.log` for attempt n after a requeue (the
lost attempt's log stays beside it, and the new one starts empty)."""

from __future__ import annotations

from pathlib import Path

from conveyor.protocol.status import Status


def step_log_path(
    data_dir: Path, run_id: int, job_id: int, step_index: int, attempt: int = 1
) -> Path:
    name = f"{step_index}.log" if attempt <= 1 else f"{step_index}.attempt-{attempt}.log"
    return data_dir / "logs" / str(run_id) / str(job_id) / name


def log_attempt(status: Status, attempts: int) -> int:
    """The attempt whose log a job shows: the one running or last run; once requeued
    (queued again after attempts), the coming one, whose log is still empty."""
    if status is Status.QUEUED and attempts > 0:
        return attempts + 1
    return max(attempts, 1)
