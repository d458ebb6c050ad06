"""Any other sender (a script, a forge this server does not know): headers
`X-Conveyor-Event` (`push`, `tag`, `pull_request` or `ping`), `X-Conveyor-Delivery`
(optional, for redelivery detection) and `X-Conveyor-Signature: sha256=<hex HMAC-SHA256
of the body with the project's webhook secret>`; the body is JSON:

    {"ref": "refs/heads/main", "sha": "<commit>", "message": "...", "author": "...",
     "actor": "...", "pull_request": {"number": 7, "source_branch": "x",
     "target_branch": "main", "fork": false}}

`ref` may be a full ref or `branch`/`tag` may be given instead; only `sha` is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.server.webhooks.providers.base import (
    EventKind,
    ForgeEvent,
    ProviderName,
    nothing,
    prefixed_signature_matches,
    pull_request_event,
    push_event,
    required_text,
    text_at,
)


class Generic:
    name = ProviderName.GENERIC
    signature_headers = frozenset({"x-conveyor-signature"})

    def detects(self, headers: Mapping[str, str]) -> bool:
        return "x-conveyor-event" in headers or "x-conveyor-signature" in headers

    def event_name(self, headers: Mapping[str, str]) -> str:
        return headers.get("x-conveyor-event", "push")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-conveyor-delivery") or None

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return prefixed_signature_matches(secret, body, headers.get("x-conveyor-signature"))

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        if event_name == EventKind.PING:
            return ForgeEvent(kind=EventKind.PING, reason="ping")
        actor = text_at(payload, "actor") or ""
        if event_name == EventKind.PULL_REQUEST:
            pull = payload.get("pull_request")
            return pull_request_event(
                number=required_text(pull, "number"),
                target_branch=required_text(pull, "target_branch"),
                source_branch=required_text(pull, "source_branch"),
                sha=required_text(payload, "sha"),
                actor=actor,
                from_fork=isinstance(pull, dict) and pull.get("fork") is True,
                message=text_at(payload, "message") or "",
                author=text_at(payload, "author") or "",
            )
        if event_name in {EventKind.PUSH, EventKind.TAG}:
            ref = text_at(payload, "ref")
            if ref is None and (tag := text_at(payload, "tag")) is not None:
                ref = f"refs/tags/{tag}"
            if ref is None:
                ref = f"refs/heads/{required_text(payload, 'branch')}"
            return push_event(
                ref=ref,
                after=required_text(payload, "sha"),
                message=text_at(payload, "message") or "",
                author=text_at(payload, "author") or "",
                actor=actor,
            )
        return nothing(f"event {event_name!r} starts no run")
