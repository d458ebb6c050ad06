"""The outbound gate: refusals happen before any connection is opened."""

from __future__ import annotations

import httpx
import pytest

from conveyor.server import outbound
from conveyor.server.config import Settings
from tests.server.receivers import receiver


def _settings(tmp_path: object, **values: object) -> Settings:
    return Settings(data_dir=str(tmp_path), **values)  # type: ignore[arg-type]


class TestCheckUrl:
    def test_loopback_is_refused_without_allow_list(self, tmp_path: object) -> None:
        with pytest.raises(outbound.OutboundRefusedError, match=r"127\.0\.0\.1"):
            outbound.check_url("http://127.0.0.1:9/x", _settings(tmp_path))

    def test_cloud_metadata_address_is_refused_even_by_name_resolution(
        self, tmp_path: object
    ) -> None:
        with pytest.raises(outbound.OutboundRefusedError, match=r"169\.254\.169\.254"):
            outbound.check_url("http://169.254.169.254/latest/meta-data/", _settings(tmp_path))

    def test_localhost_name_resolves_and_is_refused(self, tmp_path: object) -> None:
        with pytest.raises(outbound.OutboundRefusedError):
            outbound.check_url("http://localhost/", _settings(tmp_path))

    def test_private_network_is_refused(self, tmp_path: object) -> None:
        with pytest.raises(outbound.OutboundRefusedError):
            outbound.check_url("https://10.1.2.3/", _settings(tmp_path))

    def test_allow_list_admits_a_cidr(self, tmp_path: object) -> None:
        outbound.check_url(
            "http://127.0.0.1:9/", _settings(tmp_path, outbound_allow=["127.0.0.0/8"])
        )

    def test_deny_list_wins_over_allow_list(self, tmp_path: object) -> None:
        settings = _settings(tmp_path, outbound_allow=["127.0.0.1"], outbound_deny=["127.0.0.1/32"])
        with pytest.raises(outbound.OutboundRefusedError, match="deny list"):
            outbound.check_url("http://127.0.0.1/", settings)

    def test_non_http_scheme_is_refused(self, tmp_path: object) -> None:
        with pytest.raises(outbound.OutboundRefusedError):
            outbound.check_url(
                "file:///etc/passwd", _settings(tmp_path, outbound_allow=["127.0.0.1"])
            )


class TestSend:
    def test_refused_target_receives_nothing(self, tmp_path: object) -> None:
        with receiver() as target, httpx.Client() as client:
            with pytest.raises(outbound.OutboundRefusedError):
                outbound.send(client, "POST", target.url + "/hook", _settings(tmp_path), json={})
            assert target.requests == []

    def test_redirect_to_metadata_address_is_rechecked_and_refused(self, tmp_path: object) -> None:
        settings = _settings(tmp_path, outbound_allow=["127.0.0.1"])
        with (
            receiver(redirect_to="http://169.254.169.254/latest/") as target,
            httpx.Client() as client,
        ):
            with pytest.raises(outbound.OutboundRefusedError, match=r"169\.254\.169\.254"):
                outbound.send(client, "POST", target.url + "/hook", settings, json={"a": 1})
            assert len(target.requests) == 1

    def test_redirect_to_allowed_receiver_is_followed(self, tmp_path: object) -> None:
        settings = _settings(tmp_path, outbound_allow=["127.0.0.1"])
        with receiver() as final, receiver(redirect_to=None) as first, httpx.Client() as client:
            first.redirect_to = final.url + "/moved"
            response = outbound.send(client, "POST", first.url + "/hook", settings, json={"a": 1})
            assert response.status_code == 200
            assert [r.path for r in final.requests] == ["/moved"]
            assert final.requests[0].body == b'{"a":1}'
