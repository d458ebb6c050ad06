"""Bitbucket Cloud: `X-Event-Key` (`repo:push`, `pullrequest:created`,
`pullrequest:updated`), `X-Request-UUID`, and `X-Hub-Signature: sha256=<hex>` (webhooks
with a secret, since 2023). Bitbucket Data Center's connection test sends
`diagnostics:ping`.

A push lists its `changes`: this reads the first that creates or moves a branch or
tag (a push of several refs at once builds the first; the forge sends one change in
the usual case). Pull request payloads carry 12-character commit hashes, which the
trigger resolves to the full sha.
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
    required_text,
    text_at,
)

BUILD_EVENTS = frozenset({"pullrequest:created", "pullrequest:updated"})


def _account(payload: Any) -> str:
    return (
        text_at(payload, "nickname")
        or text_at(payload, "username")
        or text_at(payload, "display_name")
        or ""
    )


class Bitbucket:
    name = ProviderName.BITBUCKET
    signature_headers = frozenset({"x-hub-signature"})

    def detects(self, headers: Mapping[str, str]) -> bool:
        return "x-event-key" in headers

    def event_name(self, headers: Mapping[str, str]) -> str:
        return headers.get("x-event-key", "")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-request-uuid") or headers.get("x-request-id") or None

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return prefixed_signature_matches(secret, body, headers.get("x-hub-signature"))

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        if event_name == "diagnostics:ping":
            return ForgeEvent(kind=EventKind.PING, reason="diagnostics:ping")
        actor = _account(payload.get("actor"))
        if event_name == "repo:push":
            return _push(payload, actor)
        if event_name in BUILD_EVENTS:
            pull = payload.get("pullrequest")
            source = text_at(pull, "source", "repository", "full_name")
            target = text_at(pull, "destination", "repository", "full_name")
            return pull_request_event(
                number=required_text(pull, "id"),
                target_branch=required_text(pull, "destination", "branch", "name"),
                source_branch=required_text(pull, "source", "branch", "name"),
                sha=required_text(pull, "source", "commit", "hash"),
                actor=actor,
                from_fork=source is None or source != target,
            )
        return nothing(f"event {event_name or '(none)'!r} starts no run")


def _push(payload: dict[str, Any], actor: str) -> ForgeEvent:
    changes = (
        payload.get("push", {}).get("changes") if isinstance(payload.get("push"), dict) else None
    )
    if not isinstance(changes, list) or not changes:
        return nothing("the push lists no changes")
    deleted: str | None = None
    for change in changes:
        new = change.get("new") if isinstance(change, dict) else None
        if not isinstance(new, dict):
            old_name = text_at(change, "old", "name")
            deleted = deleted or old_name
            continue
        kind, name = text_at(new, "type"), required_text(new, "name")
        if kind not in {"branch", "tag", "annotated_tag", "named_branch"}:
            continue
        is_tag = kind in {"tag", "annotated_tag"}
        raw_author = text_at(new, "target", "author", "raw") or ""
        return ForgeEvent(
            kind=EventKind.TAG if is_tag else EventKind.PUSH,
            branch=None if is_tag else name,
            tag=name if is_tag else None,
            sha=required_text(new, "target", "hash"),
            message=(text_at(new, "target", "message") or "").rstrip("\n"),
            author=raw_author,
            actor=actor,
        )
    if deleted is not None:
        return nothing(f"branch or tag {deleted!r} was deleted")
    return nothing("the push changes no branch or tag")
