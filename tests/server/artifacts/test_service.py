"""Resumable artifact uploads on real files and a real database (SQLite, PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.pipeline.plan import ArchiveFormat, HashAlgorithm
from conveyor.protocol.agents import UploadStart
from conveyor.server.artifacts import service
from conveyor.server.config import Settings
from conveyor.server.models.artifact import Artifact
from tests.server.logs.records import Records, add_run

AGENT = 11


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def _spec(data: bytes, name: str = "dist/app.7z", **extra: object) -> UploadStart:
    return UploadStart(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **extra)  # type: ignore[arg-type]


def _upload(
    session: Session, settings: Settings, records: Records, data: bytes, name: str
) -> Artifact:
    state = service.start_upload(session, settings, records.job, AGENT, _spec(data, name))
    service.write_chunk(settings, state.upload_id, AGENT, 0, data)
    return service.complete_upload(session, settings, state.upload_id, AGENT)


class TestNormalizeName:
    @pytest.mark.parametrize(
        ("name", "normalized"),
        [("app.7z", "app.7z"), ("./dist//app.tar.gz", "dist/app.tar.gz"), ("a/./b/c", "a/b/c")],
    )
    def test_relative_names_are_cleaned(self, name: str, normalized: str) -> None:
        assert service.normalize_name(name) == normalized

    @pytest.mark.parametrize(
        "name",
        [
            "../escape",
            "dist/../../etc/passwd",
            "/etc/passwd",
            "..\\..\\win.ini",
            "C:/x",
            "a\x00b",
            "",
            ".",
            "./",
        ],
    )
    def test_names_that_could_leave_the_directory_are_refused(self, name: str) -> None:
        with pytest.raises(service.ArtifactNameError) as caught:
            service.normalize_name(name)
        assert caught.value.status_code == 422
        assert "relative path" in caught.value.message


class TestResumableUpload:
    def test_chunks_cut_in_the_middle_resume_from_the_held_offset(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session, expire_in=3600)
        data = os.urandom(300_000)
        spec = _spec(
            data, hash_algorithm=HashAlgorithm.CRC32, hash="DEADBEEF", archive=ArchiveFormat.SEVEN_Z
        )
        started = service.start_upload(db_session, settings, records.job, AGENT, spec)
        service.write_chunk(settings, started.upload_id, AGENT, 0, data[:100_000])
        # The connection broke mid-chunk: only part of the second chunk arrived.
        service.write_chunk(settings, started.upload_id, AGENT, 100_000, data[100_000:150_000])
        resumed = service.upload_state(settings, started.upload_id, AGENT)
        assert (resumed.offset, resumed.size) == (150_000, 300_000)
        service.write_chunk(settings, started.upload_id, AGENT, resumed.offset, data[150_000:])
        artifact = service.complete_upload(db_session, settings, started.upload_id, AGENT)
        db_session.commit()

        relative = f"demo/7/{records.job.id}/dist/app.7z"
        assert artifact.relative_path == relative
        assert (settings.artifacts_path / relative).read_bytes() == data
        assert artifact.size_bytes == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert (artifact.hash_algorithm, artifact.hash_value) == (HashAlgorithm.CRC32, "DEADBEEF")
        assert artifact.archive_format is ArchiveFormat.SEVEN_Z
        assert artifact.expires_at is not None
        assert not list((settings.data_dir / "uploads").glob("*.part"))

    def test_chunk_at_another_offset_is_409_with_the_held_offset(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        data = b"x" * 1000
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(data))
        service.write_chunk(settings, started.upload_id, AGENT, 0, data[:400])
        for wrong in (0, 500):
            with pytest.raises(service.UploadOffsetError) as caught:
                service.write_chunk(settings, started.upload_id, AGENT, wrong, data[wrong:])
            assert caught.value.status_code == 409
            assert caught.value.detail == {"offset": 400}

    def test_more_bytes_than_declared_are_refused(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"abc"))
        with pytest.raises(service.UploadTooLargeError):
            service.write_chunk(settings, started.upload_id, AGENT, 0, b"abcd")

    def test_sha256_mismatch_is_refused_and_the_partial_file_removed(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        started = service.start_upload(
            db_session, settings, records.job, AGENT, _spec(b"good data")
        )
        service.write_chunk(settings, started.upload_id, AGENT, 0, b"evil data")
        with pytest.raises(service.UploadChecksumError) as caught:
            service.complete_upload(db_session, settings, started.upload_id, AGENT)
        assert caught.value.status_code == 422
        assert not list((settings.data_dir / "uploads").iterdir())
        assert db_session.scalars(select(Artifact)).all() == []
        with pytest.raises(service.UploadNotFoundError):
            service.upload_state(settings, started.upload_id, AGENT)

    def test_incomplete_upload_cannot_be_completed(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"12345"))
        service.write_chunk(settings, started.upload_id, AGENT, 0, b"12")
        with pytest.raises(service.UploadIncompleteError) as caught:
            service.complete_upload(db_session, settings, started.upload_id, AGENT)
        assert caught.value.detail == {"offset": 2, "size": 5}

    def test_traversal_name_is_refused_when_the_upload_starts(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        with pytest.raises(service.ArtifactNameError):
            service.start_upload(db_session, settings, records.job, AGENT, _spec(b"x", "../../x"))
        assert not (settings.data_dir / "uploads").exists() or not list(
            (settings.data_dir / "uploads").iterdir()
        )

    def test_another_agent_may_not_continue_an_upload(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"abc"))
        with pytest.raises(service.UploadOfAnotherAgentError):
            service.write_chunk(settings, started.upload_id, AGENT + 1, 0, b"abc")

    @pytest.mark.parametrize("upload_id", ["../../secret_key", "nope", "a" * 20])
    def test_unknown_or_malformed_upload_ids_are_404(
        self, settings: Settings, upload_id: str
    ) -> None:
        with pytest.raises(service.UploadNotFoundError):
            service.upload_state(settings, upload_id, AGENT)

    def test_completing_twice_gives_the_same_artifact(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        data = b"payload"
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(data))
        service.write_chunk(settings, started.upload_id, AGENT, 0, data)
        first = service.complete_upload(db_session, settings, started.upload_id, AGENT)
        db_session.commit()
        again = service.complete_upload(db_session, settings, started.upload_id, AGENT)
        assert again.id == first.id
        assert len(db_session.scalars(select(Artifact)).all()) == 1

    def test_upload_begun_under_an_ended_lease_is_refused_and_removed(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        records.job.lease_id = "a" * 32
        db_session.flush()
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"abc"))
        service.write_chunk(settings, started.upload_id, AGENT, 0, b"abc")
        records.job.lease_id = "b" * 32  # requeued and claimed again meanwhile
        db_session.flush()
        with pytest.raises(service.UploadLeaseEndedError) as caught:
            service.complete_upload(db_session, settings, started.upload_id, AGENT)
        assert caught.value.status_code == 409
        assert "requeued or ended" in caught.value.message
        assert db_session.scalars(select(Artifact)).all() == []
        assert not list((settings.data_dir / "uploads").iterdir())

    def test_full_disk_is_507_and_the_partial_file_is_removed(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        started = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"abc"))
        part = settings.data_dir / "uploads" / f"{started.upload_id}.part"
        # /dev/full answers every write with ENOSPC: a real full disk, from the kernel.
        part.unlink()
        part.symlink_to("/dev/full")
        with pytest.raises(service.StorageFullError) as caught:
            service.write_chunk(settings, started.upload_id, AGENT, 0, b"abc")
        assert caught.value.status_code == 507
        assert "disk is full" in caught.value.message
        assert not part.is_symlink()
        assert not list((settings.data_dir / "uploads").iterdir())


class TestRemoveAbandonedUploads:
    def test_only_uploads_older_than_the_limit_are_removed(
        self, db_session: Session, settings: Settings
    ) -> None:
        records = add_run(db_session)
        old = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"old"))
        meta = settings.data_dir / "uploads" / f"{old.upload_id}.json"
        started_long_ago = json.loads(meta.read_text()) | {"created": time.time() - 7 * 3600}
        meta.write_text(json.dumps(started_long_ago))
        fresh = service.start_upload(db_session, settings, records.job, AGENT, _spec(b"new"))
        assert service.remove_abandoned_uploads(settings, timedelta(hours=6)) == 1
        with pytest.raises(service.UploadNotFoundError):
            service.upload_state(settings, old.upload_id, AGENT)
        assert service.upload_state(settings, fresh.upload_id, AGENT).offset == 0


def test_replaced_upload_of_a_requeued_job_updates_its_row(
    db_session: Session, settings: Settings
) -> None:
    records = add_run(db_session)
    first = _upload(db_session, settings, records, b"attempt one", "out.bin")
    db_session.commit()
    second = _upload(db_session, settings, records, b"attempt two!", "out.bin")
    db_session.commit()
    assert second.id == first.id
    assert second.size_bytes == len(b"attempt two!")
    assert (settings.artifacts_path / second.relative_path).read_bytes() == b"attempt two!"
