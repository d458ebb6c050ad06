"""The Conveyor server: the API, the queue, live logs, artifacts, the web UI."""

import sys

# FastAPI imports `pydantic.v1` when it makes its first route, only to refuse pydantic
# 1 models (Conveyor has none): 1.5 MiB of a server that idles at 80. Marked missing
# here, unless something loaded it already, FastAPI sees no such models, as it would
# with a pydantic that has no `v1`; anything else asking for it gets an ImportError.
sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]  # None: "not there"
