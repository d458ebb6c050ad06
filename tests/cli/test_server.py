"""`conveyor server`'s checks before it starts, and what the process it becomes loads.

The server started by the command, end to end, is tests/e2e/test_server_process.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from conveyor.cli.main import app


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["server", *args], env=env)
    return result.exit_code, result.output


class TestBadSettings:
    def test_a_bad_option_is_named_with_its_value_and_nothing_starts(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        code, output = invoke(["--port", "99999", "--agents", "-1", "--data-dir", str(data)])
        assert code == 2
        assert "error: --port 99999: Input should be less than or equal to 65535" in output
        assert "error: --agents -1: Input should be greater than or equal to 0" in output
        assert "Traceback" not in output
        assert not data.exists()  # nothing was made

    def test_a_bad_variable_is_named_as_the_user_sets_it(self, tmp_path: Path) -> None:
        code, output = invoke(
            ["--data-dir", str(tmp_path / "data")], env={"CONVEYOR_LEASE_SECONDS": "soon"}
        )
        assert code == 2
        assert "error: CONVEYOR_LEASE_SECONDS (environment or .env): Input should be" in output
        assert "fix the option, or the variable" in output


def test_the_server_process_loads_no_command_line_library() -> None:
    """What `python -m conveyor.server` imports before it serves: the server's modules,
    not Typer (the command's own; Click comes with uvicorn)."""
    probe = (
        "import sys; import conveyor.server.__main__; "
        "print(sorted(m for m in ('typer', 'shellingham', 'conveyor.cli') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
