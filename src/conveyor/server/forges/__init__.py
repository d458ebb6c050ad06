"""Commit statuses in the forges: one reporter per forge API, and their registry."""
