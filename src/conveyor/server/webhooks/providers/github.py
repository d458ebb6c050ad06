"""GitHub: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256: sha256=<hex>`.

Gitea, Forgejo and Gogs send `X-GitHub-Event` too, for compatibility: the registry
asks them first, so this provider only sees deliveries that name no other forge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.server.webhooks.providers.base import (
    EventKind,
    ForgeEvent,
    ProviderName,
    nothing,
    person,
    prefixed_signature_matches,
    pull_request_event,
    push_event,
    required_text,
    text_at,
)

# The pull request actions that change what would be built.
BUILD_ACTIONS = frozenset({"opened", "synchronize", "reopened"})


class GitHub:
    name = ProviderName.GITHUB
    signature_headers = frozenset({"x-hub-signature-256", "x-hub-signature"})

    def detects(self, headers: Mapping[str, str]) -> bool:
        return "x-github-event" in headers

    def event_name(self, headers: Mapping[str, str]) -> str:
        return headers.get("x-github-event", "")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-github-delivery") or None

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return prefixed_signature_matches(secret, body, headers.get("x-hub-signature-256"))

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        return parse_github_style(event_name, payload)


def parse_github_style(event_name: str, payload: dict[str, Any]) -> ForgeEvent:
    """GitHub's payloads, which Gitea and Forgejo mirror closely (their `pusher` has
    `login`/`username`, GitHub's has `name`; their pull request action is
    `synchronized` where GitHub says `synchronize`)."""
    if event_name == "ping":
        return ForgeEvent(kind=EventKind.PING, reason=text_at(payload, "zen") or "ping")
    if event_name == "push":
        sender = text_at(payload, "sender", "login") or text_at(payload, "pusher", "login")
        return push_event(
            ref=required_text(payload, "ref"),
            after=text_at(payload, "after") or "",
            message=text_at(payload, "head_commit", "message") or "",
            author=person(
                text_at(payload, "head_commit", "author", "name"),
                text_at(payload, "head_commit", "author", "email"),
            ),
            actor=sender or text_at(payload, "pusher", "name") or "",
        )
    if event_name == "pull_request":
        action = text_at(payload, "action") or ""
        if action not in BUILD_ACTIONS and action != "synchronized":
            return nothing(f"pull request action {action!r} starts no run")
        head_repo = text_at(payload, "pull_request", "head", "repo", "full_name")
        base_repo = text_at(payload, "pull_request", "base", "repo", "full_name")
        return pull_request_event(
            number=required_text(payload, "number"),
            target_branch=required_text(payload, "pull_request", "base", "ref"),
            source_branch=required_text(payload, "pull_request", "head", "ref"),
            sha=required_text(payload, "pull_request", "head", "sha"),
            actor=text_at(payload, "sender", "login")
            or text_at(payload, "pull_request", "user", "login")
            or "",
            # A deleted fork has no head repository: treat it as a fork, the safe side.
            from_fork=head_repo is None or head_repo != base_repo,
        )
    return nothing(f"event {event_name or '(none)'!r} starts no run")
