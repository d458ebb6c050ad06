"""The artifacts API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from sqlalchemy.orm import Session

from conveyor.pipeline.plan import HashAlgorithm
from conveyor.protocol.agents import UploadStart
from conveyor.server.artifacts import service
from conveyor.server.config import Settings
from conveyor.server.models.artifact import Artifact
from conveyor.server.models.membership import Role
from tests.server.conftest import add_user, sign_in
from tests.server.logs.records import Records, add_member, add_run

pytestmark = pytest.mark.usefixtures("clean_data_dir")

AGENT = 3


def _store(
    session: Session,
    settings: Settings,
    records: Records,
    data: bytes,
    name: str = "dist/app.7z",
    *,
    hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256,
    hash_value: str | None = None,
) -> Artifact:
    spec = UploadStart(
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        hash_algorithm=hash_algorithm,
        hash=hash_value,
    )
    started = service.start_upload(session, settings, records.job, AGENT, spec)
    half = len(data) // 2
    service.write_chunk(settings, started.upload_id, AGENT, 0, data[:half])
    service.write_chunk(settings, started.upload_id, AGENT, half, data[half:])
    artifact = service.complete_upload(session, settings, started.upload_id, AGENT)
    session.commit()
    return artifact


def _error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


class TestListRunArtifacts:
    def test_lists_names_sizes_and_hashes(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(
            db_session,
            server_settings,
            records,
            b"binary\x00data",
            hash_algorithm=HashAlgorithm.CRC32,
            hash_value="1A2B3C4D",
        )
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/runs/{records.run.id}/artifacts")
        assert response.status_code == 200, response.text
        [item] = response.json()
        assert item["id"] == artifact.id
        assert item["name"] == "dist/app.7z"
        assert item["size"] == len(b"binary\x00data")
        assert item["sha256"] == hashlib.sha256(b"binary\x00data").hexdigest()
        assert (item["hash_algorithm"], item["hash"]) == ("crc32", "1A2B3C4D")
        assert item["archive"] == "none"
        assert (item["job_id"], item["job_name"]) == (records.job.id, "build")
        assert item["created_at"]
        assert item["download_url"] == f"/api/v1/artifacts/{artifact.id}/download"

    def test_unknown_run_is_404(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        assert _error_code(http.get("/api/v1/runs/999999/artifacts"), 404) == "run_not_found"


class TestDownloadArtifact:
    def test_bytes_and_headers_carry_the_size_and_hashes(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        data = bytes(range(256)) * 4000
        artifact = _store(
            db_session,
            server_settings,
            records,
            data,
            hash_algorithm=HashAlgorithm.CRC32,
            hash_value="CAFEBABE",
        )
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert response.status_code == 200
        assert response.content == data
        digest = hashlib.sha256(data)
        assert response.headers["content-length"] == str(len(data))
        assert response.headers["digest"] == "sha-256=" + base64.b64encode(digest.digest()).decode()
        assert response.headers["x-conveyor-sha256"] == digest.hexdigest()
        assert response.headers["x-conveyor-hash"] == "crc32:CAFEBABE"
        assert 'filename="app.7z"' in response.headers["content-disposition"]

    def test_no_hash_header_when_the_pipeline_asked_for_none(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(
            db_session, server_settings, records, b"x", hash_algorithm=HashAlgorithm.NONE
        )
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert response.status_code == 200
        assert "x-conveyor-hash" not in response.headers

    def test_recorded_path_leaving_the_root_is_never_served(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        outside = server_settings.data_dir / "secret_key"
        assert outside.exists()  # the file a traversal would give away
        row = Artifact(
            job_id=records.job.id,
            name="evil",
            relative_path="../secret_key",
            size_bytes=1,
            sha256="0" * 64,
        )
        db_session.add(row)
        db_session.commit()
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/artifacts/{row.id}/download")
        assert _error_code(response, 404) == "artifact_path_refused"
        assert outside.read_text().strip() not in response.text

    def test_symlink_out_of_the_root_is_never_served(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(db_session, server_settings, records, b"fine", "link")
        stored = server_settings.artifacts_path / artifact.relative_path
        stored.unlink()
        stored.symlink_to(server_settings.data_dir / "secret_key")
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert _error_code(response, 404) == "artifact_path_refused"

    def test_removed_file_is_404(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(db_session, server_settings, records, b"gone")
        (server_settings.artifacts_path / artifact.relative_path).unlink()
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert _error_code(response, 404) == "artifact_not_found"


class TestArtifactPermissions:
    def test_anonymous_is_401(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(db_session, server_settings, records, b"data")
        assert _error_code(http.get(f"/api/v1/runs/{records.run.id}/artifacts"), 401)
        download = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert _error_code(download, 401) == "not_authenticated"

    def test_viewer_lists_and_downloads(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        artifact = _store(db_session, server_settings, records, b"data")
        add_member(db_session, add_user(db_session, "vic"), records.project, Role.VIEWER)
        sign_in(http, "vic")
        assert http.get(f"/api/v1/runs/{records.run.id}/artifacts").status_code == 200
        assert http.get(f"/api/v1/artifacts/{artifact.id}/download").content == b"data"

    def test_maintainer_of_another_project_is_403(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        other = add_run(db_session, "other")
        artifact = _store(db_session, server_settings, records, b"data")
        add_member(db_session, add_user(db_session, "mo"), other.project, Role.MAINTAINER)
        sign_in(http, "mo")
        listing = http.get(f"/api/v1/runs/{records.run.id}/artifacts")
        assert _error_code(listing, 403) == "permission_denied"
        download = http.get(f"/api/v1/artifacts/{artifact.id}/download")
        assert _error_code(download, 403) == "permission_denied"
