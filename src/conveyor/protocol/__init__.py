"""Wire models between agents and the server. Imports pydantic and the pure pipeline plan only."""

from conveyor.protocol.status import Status

__all__ = ["Status"]
