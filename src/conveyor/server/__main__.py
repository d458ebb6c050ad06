"""The server process: ``python -m conveyor.server [SETTINGS_JSON]``.

`conveyor server` checks its options and then becomes this (by exec, same process),
so that the command line's own libraries (Typer) do not stay in the server's memory.
The optional argument holds settings given as options, by field name, over the
environment's.
"""

from __future__ import annotations

import json
import sys

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.serving import serve


def main(argv: list[str]) -> None:
    overrides = json.loads(argv[0]) if argv else {}
    settings = Settings(**overrides)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main(sys.argv[1:])
