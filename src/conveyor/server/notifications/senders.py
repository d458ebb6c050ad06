"""One sender per hook kind, behind one small contract, and their registry.

    Sender.send(outgoing, transport) -> response code (None for e-mail)

A sender raises DeliveryFailedError (with the response code when there was one) when
the receiver did not take the message; the delivery is retried then. Every HTTP call
goes through `outbound.send` (allow/deny list, redirects re-checked).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.server import outbound
from conveyor.server.config import Settings
from conveyor.server.models.notification_hook import HookKind

if TYPE_CHECKING:
    import httpx

SIGNATURE_HEADER = "X-Conveyor-Signature"
EVENT_HEADER = "X-Conveyor-Event"
DELIVERY_HEADER = "X-Conveyor-Delivery"
USER_AGENT = "Conveyor-Notifications/0.1"

# Discord embed colours (decimal RGB) by run status.
STATUS_COLOURS = {
    "success": 0x2EA043,
    "warning": 0xD29922,
    "failure": 0xCF222E,
    "error": 0xCF222E,
    "cancelled": 0x6E7781,
    "skipped": 0x6E7781,
    "running": 0x0969DA,
    "queued": 0x0969DA,
}


class DeliveryFailedError(Exception):
    """The receiver did not take the message (an error response, or no connection)."""

    def __init__(self, message: str, response_code: int | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code


@dataclass(frozen=True)
class Outgoing:
    """One message to send: the rendered text and the run's variables."""

    delivery_id: int | None
    kind: HookKind
    target: str
    text: str
    context: Mapping[str, Any]
    username: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class Transport:
    client: httpx.Client
    settings: Settings


class Sender(Protocol):
    def send(self, outgoing: Outgoing, transport: Transport) -> int | None: ...


def _post_json(
    transport: Transport, url: str, body: bytes, headers: Mapping[str, str] | None = None
) -> int:
    import httpx

    all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    all_headers.update(headers or {})
    try:
        response = outbound.send(
            transport.client, "POST", url, transport.settings, content=body, headers=all_headers
        )
    except httpx.HTTPError as error:
        raise DeliveryFailedError(f"POST {url} failed: {error}") from error
    if not response.is_success:
        raise DeliveryFailedError(
            f"POST {url} answered {response.status_code}: {response.text[:300]}",
            response.status_code,
        )
    return response.status_code


def _fields(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    pairs = [
        ("Status", context.get("status")),
        ("Branch", context.get("branch") or context.get("tag")),
        ("Commit", context.get("commit_short")),
        ("Author", context.get("author")),
        ("Duration", context.get("duration")),
    ]
    return [
        {"name": name, "value": str(value)[:1024], "inline": True} for name, value in pairs if value
    ]


# Discord's limits ("Execute Webhook" and "Embed Limits" in discord.com/developers/docs):
# content 2000 characters, username 80, embed title 256, description 4096, field name
# 256, field value 1024, and 6000 characters for all the text of one embed.
DISCORD_CONTENT_LIMIT = 2000
DISCORD_USERNAME_LIMIT = 80
DISCORD_TITLE_LIMIT = 256
DISCORD_DESCRIPTION_LIMIT = 4096
DISCORD_EMBED_TOTAL_LIMIT = 6000
# Slack's limit on the text of a `section` block (Block Kit reference, "Section").
SLACK_SECTION_TEXT_LIMIT = 3000


class DiscordSender:
    """Discord's "Execute Webhook" (discord.com/developers/docs/resources/webhook
    #execute-webhook): POST /api/webhooks/{webhook.id}/{webhook.token} with a JSON body
    of `content`, a `username` override, `embeds` (each with title, description, url,
    color and `fields` of name/value/inline) and `allowed_mentions`, as AMS-Build's
    outbound hooks send. No authentication header: the token is part of the URL.

    Two options the reference describes are used: `wait=true` is added to the query,
    so Discord answers only once the message is saved (200 with the message; without
    it a message that is not saved returns no error), and `allowed_mentions:
    {"parse": []}` keeps a commit message's "@everyone" from pinging anyone."""

    def send(self, outgoing: Outgoing, transport: Transport) -> int | None:
        context = outgoing.context
        title = f"{context.get('project')} #{context.get('run_number')}"[:DISCORD_TITLE_LIMIT]
        fields = _fields(context)
        used = len(title) + sum(len(f["name"]) + len(f["value"]) for f in fields)
        budget = max(0, min(DISCORD_DESCRIPTION_LIMIT, DISCORD_EMBED_TOTAL_LIMIT - used))
        embed: dict[str, Any] = {
            "title": title,
            "description": str(context.get("commit_message", ""))[:budget],
            "color": STATUS_COLOURS.get(str(context.get("status")), 0x6E7781),
            "fields": fields,
        }
        if context.get("url"):
            embed["url"] = context["url"]
        body = {
            "content": outgoing.text[:DISCORD_CONTENT_LIMIT],
            "username": (outgoing.username or "Conveyor")[:DISCORD_USERNAME_LIMIT],
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        }
        import httpx

        url = str(httpx.URL(outgoing.target).copy_merge_params({"wait": "true"}))
        return _post_json(transport, url, json.dumps(body).encode())


class SlackSender:
    """Slack's incoming webhook ("Sending messages using Incoming Webhooks",
    api.slack.com/messaging/webhooks, and the SDKs' webhook clients): POST the
    webhook URL with `Content-type: application/json` and a body of `text` (also the
    notification's fallback) and `blocks`, here one `section` block of mrkdwn text.
    No authentication header: the secret is part of the URL. Slack answers 200 `ok`,
    or 400/403/404/410 with a reason such as `invalid_payload` or `channel_not_found`
    (recorded as the delivery's error)."""

    def send(self, outgoing: Outgoing, transport: Transport) -> int | None:
        body = {
            "text": outgoing.text,
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": outgoing.text[:SLACK_SECTION_TEXT_LIMIT]},
                }
            ],
        }
        return _post_json(transport, outgoing.target, json.dumps(body).encode())


def signature(secret: str, body: bytes) -> str:
    """The value of X-Conveyor-Signature: `sha256=` and the HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """A generic JSON webhook: the run's variables and the text, signed with the hook's
    secret over the exact body bytes sent."""

    def send(self, outgoing: Outgoing, transport: Transport) -> int | None:
        body = json.dumps(
            {"message": outgoing.text, **dict(outgoing.context)}, sort_keys=True
        ).encode()
        headers = {EVENT_HEADER: str(outgoing.context.get("trigger", ""))}
        if outgoing.delivery_id is not None:
            headers[DELIVERY_HEADER] = str(outgoing.delivery_id)
        if outgoing.secret:
            headers[SIGNATURE_HEADER] = signature(outgoing.secret, body)
        return _post_json(transport, outgoing.target, body, headers)


def email_addresses(target: str) -> list[str]:
    return [part.strip() for part in target.split(",") if part.strip()]


class EmailSender:
    """E-mail over SMTP with the server's settings (smtp_host, smtp_port, smtp_from,
    optional smtp_user/smtp_password and STARTTLS)."""

    def send(self, outgoing: Outgoing, transport: Transport) -> int | None:
        settings = transport.settings
        if not settings.smtp_host:
            raise DeliveryFailedError(
                "e-mail notifications need an SMTP server: set CONVEYOR_SMTP_HOST "
                "(and CONVEYOR_SMTP_PORT, CONVEYOR_SMTP_FROM)"
            )
        # Imported here: a server that sends no e-mail never needs it.
        import smtplib

        context = outgoing.context
        message = EmailMessage()
        message["Subject"] = (
            f"[{context.get('project')}] run #{context.get('run_number')} {context.get('status')}"
        )
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(email_addresses(outgoing.target))
        message.set_content(outgoing.text + "\n")
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.outbound_timeout_seconds
            ) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_user:
                    password = settings.smtp_password
                    smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            code = getattr(error, "smtp_code", None)
            raise DeliveryFailedError(
                f"sending e-mail through {settings.smtp_host}:{settings.smtp_port} failed: {error}",
                code if isinstance(code, int) else None,
            ) from error
        return None


SENDERS: Mapping[HookKind, Sender] = {
    HookKind.DISCORD: DiscordSender(),
    HookKind.SLACK: SlackSender(),
    HookKind.WEBHOOK: WebhookSender(),
    HookKind.EMAIL: EmailSender(),
}
