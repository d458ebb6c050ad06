"""Every provider, by name, in the order they are recognised by their headers."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.server.webhooks.providers.base import Provider, ProviderName
from conveyor.server.webhooks.providers.bitbucket import Bitbucket
from conveyor.server.webhooks.providers.generic import Generic
from conveyor.server.webhooks.providers.gitea import FORGEJO, GITEA
from conveyor.server.webhooks.providers.github import GitHub
from conveyor.server.webhooks.providers.gitlab import GitLab

# Forgejo sends Gitea's headers too, and both send GitHub's: most specific first.
PROVIDERS: tuple[Provider, ...] = (FORGEJO, GITEA, GitLab(), Bitbucket(), Generic(), GitHub())
BY_NAME: Mapping[str, Provider] = {provider.name.value: provider for provider in PROVIDERS}

SIGNATURE_HEADERS = frozenset(
    {"authorization", "cookie"}.union(*(provider.signature_headers for provider in PROVIDERS))
)
"""Headers whose values are never stored."""


def by_name(name: str) -> Provider | None:
    return BY_NAME.get(name.lower())


def detect(headers: Mapping[str, str]) -> Provider | None:
    """The provider whose headers these are (names lowercase), or None."""
    for provider in PROVIDERS:
        if provider.detects(headers):
            return provider
    return None


__all__ = [
    "BY_NAME",
    "PROVIDERS",
    "SIGNATURE_HEADERS",
    "Provider",
    "ProviderName",
    "by_name",
    "detect",
]
