"""Gitea and Forgejo: GitHub-shaped payloads, `X-Gitea-Event`/`X-Forgejo-Event`,
`X-Gitea-Delivery`/`X-Forgejo-Delivery`, and the HMAC-SHA256 hex of the body (no
`sha256=` prefix) in `X-Gitea-Signature`/`X-Forgejo-Signature`.

Forgejo sends the Gitea headers as well, so the registry asks Forgejo first.
Their "Test delivery" button sends a push of the default branch's head commit, which
builds like any push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.server.webhooks.providers.base import (
    ForgeEvent,
    ProviderName,
    hmac_sha256_hex,
    signature_matches,
)
from conveyor.server.webhooks.providers.github import parse_github_style


class GiteaFamily:
    def __init__(self, name: ProviderName, header_prefix: str) -> None:
        self.name = name
        self._event = f"{header_prefix}-event"
        self._delivery = f"{header_prefix}-delivery"
        self._signature = f"{header_prefix}-signature"
        self.signature_headers = frozenset({self._signature, "x-gitea-signature"})

    def detects(self, headers: Mapping[str, str]) -> bool:
        return self._event in headers

    def event_name(self, headers: Mapping[str, str]) -> str:
        return headers.get(self._event, "")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(self._delivery) or None

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return signature_matches(
            hmac_sha256_hex(secret, body), (headers.get(self._signature) or "").lower()
        )

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        return parse_github_style(event_name, payload)


GITEA = GiteaFamily(ProviderName.GITEA, "x-gitea")
FORGEJO = GiteaFamily(ProviderName.FORGEJO, "x-forgejo")
