"""Agents: their accounts and tokens, the queue they claim from, leases and heartbeats,
and the server side of the agent protocol (`conveyor.protocol.agents`)."""
