"""Requests that set a commit's status in each forge's API, one reporter per forge.

Each request below follows the forge's own API reference (looked up for this module;
the section named is where the path, the authentication header and the body fields
come from). `api` is the link's API base URL: `https://api.github.com`,
`https://gitlab.example/api/v4`, `https://gitea.example/api/v1`,
`https://api.bitbucket.org` (Bitbucket's paths carry their `/2.0` themselves).

    GitHub     REST API, "Commit statuses > Create a commit status"
               (docs.github.com/rest/commits/statuses#create-a-commit-status)
               POST {api}/repos/{owner}/{repo}/statuses/{sha}
               Authorization: Bearer <token>; Accept: application/vnd.github+json;
               X-GitHub-Api-Version: 2022-11-28
               body {state, target_url, description, context};
               state: error | failure | pending | success; answers 201
    GitLab     REST API, "Commits > Set the pipeline status of a commit"
               (docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit)
               POST {api}/projects/{id or URL-encoded path}/statuses/{sha}
               PRIVATE-TOKEN: <token>
               body {state, ref?, name, target_url, description}; `name` (alias
               `context`) labels the status; ref, target_url, description: 255
               characters at most; state: pending | running | success | failed |
               canceled | skipped; answers 201
    Gitea      API v1, "repository > repoCreateStatus", body CreateStatusOption
               (docs.gitea.com/development/api-usage for the header)
               POST {api}/repos/{owner}/{repo}/statuses/{sha}
               Authorization: token <token>
               body {state, target_url, description, context};
               state: pending | success | error | failure (newer releases add
               `warning`; it is not sent, so older servers understand every state)
    Bitbucket  Cloud REST API 2.0, "Commit statuses > Create a build status for a
               commit" (developer.atlassian.com/cloud/bitbucket/rest/api-group-commit-statuses)
               POST {api}/2.0/repositories/{workspace}/{repo_slug}/commit/{commit}/statuses/build
               Authorization: Bearer <access token>
               body {key, state, url, name, description, refname?}; `key` identifies
               the status (a later POST with the same key overwrites it); `refname`
               ties it to a branch's pull requests; state: INPROGRESS | SUCCESSFUL |
               FAILED | STOPPED; answers 201

A run's status maps onto each forge's states in the reporter's STATES: queued and
running are pending (GitLab: pending / running, Bitbucket: INPROGRESS); cancelled is
`error` where the forge has no cancelled state (GitHub, Gitea), `canceled` on GitLab
and STOPPED on Bitbucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from conveyor.server.models.forge_link import ForgeKind

GITHUB_API_VERSION = "2022-11-28"
GITLAB_FIELD_LIMIT = 255
GITHUB_DESCRIPTION_LIMIT = 140  # GitHub refuses longer descriptions (422).


@dataclass(frozen=True)
class StatusReport:
    sha: str
    run_status: str
    """The run's status (queued, running, success, failure, ...)."""
    target_url: str
    description: str
    context: str
    branch: str | None = None
    """The run's branch, when it built one (GitLab `ref`, Bitbucket `refname`)."""
    tag: str | None = None


@dataclass(frozen=True)
class ForgeRequest:
    """One POST with a JSON body (every forge's status call is one)."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"


class Reporter(Protocol):
    def request(
        self, api_base_url: str, repository: str, token: str, report: StatusReport
    ) -> ForgeRequest: ...


def _owner_repo(repository: str) -> str:
    owner, _, name = repository.strip("/").partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


def _state(states: Mapping[str, str], run_status: str) -> str:
    return states.get(run_status, states["pending"])


class GitHubReporter:
    STATES: Mapping[str, str] = {
        "queued": "pending",
        "pending": "pending",
        "running": "pending",
        "success": "success",
        "warning": "success",
        "skipped": "success",
        "failure": "failure",
        "error": "error",
        "cancelled": "error",
    }

    def request(
        self, api_base_url: str, repository: str, token: str, report: StatusReport
    ) -> ForgeRequest:
        return ForgeRequest(
            url=f"{api_base_url.rstrip('/')}/repos/{_owner_repo(repository)}/statuses/{report.sha}",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
            },
            body={
                "state": _state(self.STATES, report.run_status),
                "target_url": report.target_url,
                "description": report.description[:GITHUB_DESCRIPTION_LIMIT],
                "context": report.context,
            },
        )


class GiteaReporter:
    STATES: Mapping[str, str] = {
        "queued": "pending",
        "pending": "pending",
        "running": "pending",
        "success": "success",
        "warning": "success",
        "skipped": "success",
        "failure": "failure",
        "error": "error",
        "cancelled": "error",
    }

    def request(
        self, api_base_url: str, repository: str, token: str, report: StatusReport
    ) -> ForgeRequest:
        return ForgeRequest(
            url=f"{api_base_url.rstrip('/')}/repos/{_owner_repo(repository)}/statuses/{report.sha}",
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            body={
                "state": _state(self.STATES, report.run_status),
                "target_url": report.target_url,
                "description": report.description,
                "context": report.context,
            },
        )


class GitLabReporter:
    STATES: Mapping[str, str] = {
        "queued": "pending",
        "pending": "pending",
        "running": "running",
        "success": "success",
        "warning": "success",
        "skipped": "skipped",
        "failure": "failed",
        "error": "failed",
        "cancelled": "canceled",
    }

    def request(
        self, api_base_url: str, repository: str, token: str, report: StatusReport
    ) -> ForgeRequest:
        # The project may be named by its path, URL-encoded as one segment ("a%2Fb").
        project = quote(repository.strip("/"), safe="")
        body: dict[str, Any] = {"state": _state(self.STATES, report.run_status)}
        ref = report.branch or report.tag
        if ref:
            body["ref"] = ref[:GITLAB_FIELD_LIMIT]
        body.update(
            {
                "name": report.context,
                "target_url": report.target_url[:GITLAB_FIELD_LIMIT],
                "description": report.description[:GITLAB_FIELD_LIMIT],
            }
        )
        return ForgeRequest(
            url=f"{api_base_url.rstrip('/')}/projects/{project}/statuses/{report.sha}",
            headers={"PRIVATE-TOKEN": token, "Accept": "application/json"},
            body=body,
        )


class BitbucketReporter:
    STATES: Mapping[str, str] = {
        "queued": "INPROGRESS",
        "pending": "INPROGRESS",
        "running": "INPROGRESS",
        "success": "SUCCESSFUL",
        "warning": "SUCCESSFUL",
        "skipped": "STOPPED",
        "failure": "FAILED",
        "error": "FAILED",
        "cancelled": "STOPPED",
    }

    def request(
        self, api_base_url: str, repository: str, token: str, report: StatusReport
    ) -> ForgeRequest:
        body: dict[str, Any] = {
            "key": report.context,
            "state": _state(self.STATES, report.run_status),
            "url": report.target_url,
            "name": report.context,
            "description": report.description,
        }
        if report.branch:
            body["refname"] = report.branch
        return ForgeRequest(
            url=(
                f"{api_base_url.rstrip('/')}/2.0/repositories/{_owner_repo(repository)}"
                f"/commit/{report.sha}/statuses/build"
            ),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            body=body,
        )


REPORTERS: Mapping[ForgeKind, Reporter] = {
    ForgeKind.GITHUB: GitHubReporter(),
    ForgeKind.GITLAB: GitLabReporter(),
    ForgeKind.GITEA: GiteaReporter(),
    ForgeKind.BITBUCKET: BitbucketReporter(),
}
