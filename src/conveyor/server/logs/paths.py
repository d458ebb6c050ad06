"""Where step logs live: `<data_dir>/logs/<run id>/<job id>/<step index>.log`."""

from __future__ import annotations

from pathlib import Path


def step_log_path(data_dir: Path, run_id: int, job_id: int, step_index: int) -> Path:
    return data_dir / "logs" / str(run_id) / str(job_id) / f"{step_index}.log"
