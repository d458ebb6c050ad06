"""GitLab: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`), the
secret itself in `X-Gitlab-Token`, and `Idempotency-Key` (the same on every retry of
a delivery) or else `X-Gitlab-Event-UUID` as the delivery id.

GitLab has no ping: its "Test" button sends a real push of the latest commit, which
builds like any push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.server.webhooks.providers.base import (
    ForgeEvent,
    PayloadError,
    ProviderName,
    nothing,
    person,
    pull_request_event,
    push_event,
    required_text,
    signature_matches,
    text_at,
)

# object_attributes.action of merge requests that change what would be built.
BUILD_ACTIONS = frozenset({"open", "reopen", "update"})


class GitLab:
    name = ProviderName.GITLAB
    signature_headers = frozenset({"x-gitlab-token"})

    def detects(self, headers: Mapping[str, str]) -> bool:
        return "x-gitlab-event" in headers

    def event_name(self, headers: Mapping[str, str]) -> str:
        return headers.get("x-gitlab-event", "")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid") or None

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return signature_matches(secret, headers.get("x-gitlab-token"))

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        kind = text_at(payload, "object_kind")
        if kind in {"push", "tag_push"}:
            after = text_at(payload, "after") or ""
            head = _head_commit(payload, text_at(payload, "checkout_sha") or after)
            return push_event(
                ref=required_text(payload, "ref"),
                after=after,
                message=text_at(head, "message") or "",
                author=person(text_at(head, "author", "name"), text_at(head, "author", "email")),
                actor=text_at(payload, "user_username") or text_at(payload, "user_name") or "",
            )
        if kind == "merge_request":
            action = text_at(payload, "object_attributes", "action") or ""
            if action not in BUILD_ACTIONS:
                return nothing(f"merge request action {action!r} starts no run")
            attributes = payload.get("object_attributes")
            last = attributes.get("last_commit") if isinstance(attributes, dict) else None
            source = text_at(payload, "object_attributes", "source_project_id")
            target = text_at(payload, "object_attributes", "target_project_id")
            return pull_request_event(
                number=required_text(payload, "object_attributes", "iid"),
                target_branch=required_text(payload, "object_attributes", "target_branch"),
                source_branch=required_text(payload, "object_attributes", "source_branch"),
                sha=required_text(payload, "object_attributes", "last_commit", "id"),
                actor=text_at(payload, "user", "username") or "",
                from_fork=source is None or source != target,
                message=text_at(last, "message") or "",
                author=person(text_at(last, "author", "name"), text_at(last, "author", "email")),
            )
        if kind is None:
            raise PayloadError("the payload has no object_kind")
        return nothing(f"event {event_name!r} ({kind}) starts no run")


def _head_commit(payload: dict[str, Any], sha: str) -> dict[str, Any]:
    commits = payload.get("commits")
    if isinstance(commits, list):
        for commit in commits:
            if isinstance(commit, dict) and commit.get("id") == sha:
                return commit
    return {}
