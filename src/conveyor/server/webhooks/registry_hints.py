"""What to type into each forge's webhook form."""

from __future__ import annotations

from conveyor.server.webhooks.schemas import ProviderHint


def hints(base_url: str, project: str) -> list[ProviderHint]:
    def url(provider: str) -> str:
        return f"{base_url}/hooks/{provider}/{project}"

    return [
        ProviderHint(
            provider="github",
            url=url("github"),
            signing="Secret (content type application/json; sent as X-Hub-Signature-256)",
            events=["push", "pull_request"],
        ),
        ProviderHint(
            provider="gitlab",
            url=url("gitlab"),
            signing="Secret token (sent as X-Gitlab-Token)",
            events=["Push events", "Tag push events", "Merge request events"],
        ),
        ProviderHint(
            provider="gitea",
            url=url("gitea"),
            signing="Secret (content type application/json; X-Gitea-Signature)",
            events=["push", "create", "pull_request"],
        ),
        ProviderHint(
            provider="forgejo",
            url=url("forgejo"),
            signing="Secret (content type application/json; X-Forgejo-Signature)",
            events=["push", "create", "pull_request"],
        ),
        ProviderHint(
            provider="bitbucket",
            url=url("bitbucket"),
            signing="Secret (sent as X-Hub-Signature)",
            events=["repo:push", "pullrequest:created", "pullrequest:updated"],
        ),
        ProviderHint(
            provider="generic",
            url=url("generic"),
            signing="X-Conveyor-Signature: sha256=<HMAC-SHA256 hex of the body>",
            events=["push", "tag", "pull_request", "ping"],
        ),
    ]
