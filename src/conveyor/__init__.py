"""Conveyor: a self-hosted CI/CD server."""

__version__ = "0.1.0"
