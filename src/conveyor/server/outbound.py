"""The one gate for HTTP calls the server makes on a project's behalf (notifications,
commit statuses): a project must not make the server call its own loopback, the
private network or the cloud metadata address (169.254.169.254) unless an admin allows it.

    check_url(url, settings)     resolve the host; raise OutboundRefusedError when any of
                                 its addresses is denied, or is loopback, private,
                                 link-local, reserved or multicast and not allowed
    send(client, method, url, settings, ...)
                                 check, send without following redirects, and follow
                                 each redirect by hand after checking it again

Rules, in order: a match in `outbound_deny` refuses; a match in `outbound_allow` admits;
otherwise only global (public) addresses are admitted. Entries are CIDRs (`10.0.0.0/8`,
`127.0.0.1`) or host names (matched exactly, case-insensitively).

The check resolves the name before any connection is opened, so a refused address is
never contacted. (A name whose DNS answer changes between the check and the connect
could slip through; deployments that fear that should deny by name as well.)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from conveyor.server.config import Settings
from conveyor.server.errors import InvalidInputError

if TYPE_CHECKING:
    import httpx  # see notifications/service.py: imported only where calls are made

MAX_REDIRECTS = 5
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefusedError(InvalidInputError):
    code = "outbound_refused"


class TooManyRedirectsError(InvalidInputError):
    code = "too_many_redirects"


def _matches(host: str, address: IPAddress, entries: Iterable[str]) -> bool:
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if entry.lower().rstrip(".") == host.lower().rstrip("."):
                return True
            continue
        if address.version == network.version and address in network:
            return True
    return False


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OutboundRefusedError(
            f"outbound call refused: host {host!r} does not resolve ({error.strerror}); "
            "check the URL",
            detail={"host": host},
        ) from error
    addresses: list[IPAddress] = []
    for info in infos:
        # The scope id of an IPv6 link-local address ("fe80::1%eth0") is not part of it.
        text = str(info[4][0]).split("%", 1)[0]
        addresses.append(ipaddress.ip_address(text))
    return addresses


def check_url(url: str, settings: Settings) -> None:
    """Return if `url` may be called; raise OutboundRefusedError (saying why) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefusedError(
            f"outbound call refused: {url!r} is not an http(s) URL with a host",
            detail={"url": url},
        )
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for address in _resolve(host, port):
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if _matches(host, address, settings.outbound_deny):
            raise OutboundRefusedError(
                f"outbound call to {host} ({address}) refused: it is in the server's deny "
                "list (CONVEYOR_OUTBOUND_DENY)",
                detail={"host": host, "address": str(address)},
            )
        if address.is_global or _matches(host, address, settings.outbound_allow):
            continue
        raise OutboundRefusedError(
            f"outbound call to {host} ({address}) refused: loopback, private, link-local "
            "and reserved addresses are not called unless an administrator allows them "
            "(CONVEYOR_OUTBOUND_ALLOW, e.g. '[\"10.0.0.0/8\"]')",
            detail={"host": host, "address": str(address)},
        )


def send(
    client: httpx.Client,
    method: str,
    url: str,
    settings: Settings,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Send one request through the gate, following up to MAX_REDIRECTS redirects by
    hand (each target checked again; 303 turns into a GET without a body)."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, settings)
        response = client.request(
            method, url, json=json, content=content, headers=headers, follow_redirects=False
        )
        if not response.is_redirect:
            return response
        location = response.headers.get("location", "")
        url = urljoin(url, location)
        if response.status_code == 303:
            method, json, content = "GET", None, None
    raise TooManyRedirectsError(
        f"outbound call gave up after {MAX_REDIRECTS} redirects (last: {url})",
        detail={"url": url},
    )
