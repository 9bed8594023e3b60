"""AI reads through HTTP with the shipped model: an upload becomes a done read with findings, heatmaps and
a VHS; bad images fail alone with a reason; re-runs, feedback, the dataset export and the registry."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image as PILImage

from clinics.records import storage
from clinics.records.models import Study
from clinics.tenancy.models import AuditEntry, Role
from inference.model.phantoms import generate
from inference.models import Finding, ModelVersion, ModelVersionStatus, Read, ReadStatus
from inference.reads import services
from inference.reads.runner import reads_run_pending
from inference.registry import active_model_for
from tests.conftest import Cast, bearer_client, make_user
from tests.inference.factories import colour_photo, make_model_version, phantom_png
from tests.records.factories import stored_keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _inline_reads(settings: Any) -> None:
    settings.XCALIBER_READ_WORKER = "inline"
    settings.XCALIBER_BACKGROUND = "inline"  # previews at commit too, not on a thread the test DB cannot see


def _png(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def capture(cast: Cast, files: list[SimpleUploadedFile], commit: Any, **fields: Any) -> dict[str, Any]:
    values = {"name": "Bori", "species": "canine", "body_region": "thorax", "files": files, **fields}
    with commit(execute=True):
        response = cast.client(Role.VET).post("/api/v1/captures/", values, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


def study_reads(cast: Cast, study_id: str) -> dict[str, Any]:
    response = cast.client(Role.VIEWER).get(f"/api/v1/studies/{study_id}/reads/")
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Any) -> Any:
    return django_capture_on_commit_callbacks


def test_the_shipped_model_is_registered_and_active() -> None:
    version = active_model_for(species="canine", body_region="thorax")
    assert version is not None
    assert version.name == "xcaliber-phantom"
    assert version.weights_key.startswith("builtin:")
    assert "synthetic" in version.intended_use.lower()
    assert active_model_for(species="feline", body_region="musculoskeletal") == version
    assert active_model_for(species="other", body_region="thorax") is None


def test_an_upload_gets_a_done_read_with_findings_heatmaps_and_vhs(cast: Cast, commit: Any) -> None:
    data = phantom_png(11, region="thorax", species="canine", findings={"cardiomegaly": True})
    body = capture(cast, [_png("thorax.png", data)], commit)
    reads = study_reads(cast, body["study"]["id"])
    assert reads["study_status"] == "read"
    [read] = reads["reads"]
    assert read["status"] == "done", read
    assert read["model"]["name"] == "xcaliber-phantom"
    assert "synthetic" in read["intended_use"].lower()
    assert read["intended_use"] == read["model"]["intended_use"]
    codes = [f["code"] for f in read["findings"]]
    assert codes[-1] == "vhs"
    assert set(codes[:-1]) == {
        "cardiomegaly",
        "pleural_effusion",
        "pneumothorax",
        "pulmonary_nodule",
        "megaesophagus",
        "alveolar_pattern",
    }
    by_code = {f["code"]: f for f in read["findings"]}
    cardio = by_code["cardiomegaly"]
    assert cardio["positive"] is True
    assert cardio["probability"] >= cardio["threshold"]
    assert cardio["display_name"] == "Cardiomegaly"
    for finding in read["findings"][:-1]:  # a heatmap exactly for the positives
        assert (finding["heatmap_url"] is not None) == finding["positive"]
    heatmap = cast.client(Role.VIEWER).get(cardio["heatmap_url"])
    assert heatmap.status_code == 200
    assert heatmap["Content-Type"] == "image/png"
    picture = PILImage.open(io.BytesIO(b"".join(heatmap.streaming_content)))  # type: ignore[attr-defined]
    assert picture.mode == "RGB"
    assert max(picture.size) == 512
    vhs = by_code["vhs"]["measurement"]
    assert vhs["unit"] == "vertebrae"
    assert vhs["value"] > 10.7
    assert by_code["vhs"]["positive"] is True
    for axis in ("long_axis", "short_axis", "reference_points"):
        assert len(vhs[axis]) == 2
        assert all(0 <= v <= 512 for point in vhs[axis] for v in point)
    assert "Cardiomegaly" in read["report"]
    assert "synthetic" in read["report"].lower()
    assert read["timings"]["model_ms"] > 0
    assert read["attempts"] == 1
    assert read["region_probabilities"]["thorax"] > 0.5


def test_the_read_is_queued_in_the_upload_transaction_and_a_worker_runs_it(
    cast: Cast, commit: Any, settings: Any
) -> None:
    settings.XCALIBER_READ_WORKER = "off"
    data = phantom_png(3, region="thorax", species="feline")
    body = capture(cast, [_png("a.png", data)], commit, species="feline")
    [read] = Read.objects.filter(study_id=body["study"]["id"])
    assert read.status == ReadStatus.QUEUED
    assert read.species == "feline"
    assert Study.objects.get(id=read.study_id).status == "received"
    call_command("reads_work", "--once", stdout=io.StringIO())
    read.refresh_from_db()
    assert read.status == ReadStatus.DONE
    assert Study.objects.get(id=read.study_id).status == "read"


def test_no_model_reads_an_exotic_species(cast: Cast, commit: Any) -> None:
    body = capture(cast, [_png("a.png", phantom_png(4, region="thorax"))], commit, species="other")
    assert study_reads(cast, body["study"]["id"])["reads"] == []
    assert Study.objects.get(id=body["study"]["id"]).status == "received"


def test_bad_images_fail_alone_with_a_reason(cast: Cast, commit: Any, settings: Any) -> None:
    """A colour photo and an abdomen uploaded as a thorax fail; the good thorax in the same batch reads."""
    settings.XCALIBER_READ_WORKER = "off"
    files = [
        _png("good.png", phantom_png(5, region="thorax", species="canine")),
        SimpleUploadedFile("photo.jpg", colour_photo(), content_type="image/jpeg"),
        _png("abdomen.png", phantom_png(6, region="abdomen", species="canine")),
    ]
    body = capture(cast, files, commit)
    assert reads_run_pending() == 1  # one batch for the three
    reads = {r["image_id"]: r for r in study_reads(cast, body["study"]["id"])["reads"]}
    by_name = {image["original_filename"]: reads[image["id"]] for image in body["study"]["images"]}
    assert by_name["good.png"]["status"] == "done"
    assert by_name["photo.jpg"]["status"] == "failed"
    assert by_name["photo.jpg"]["failure"]["code"] == "not_a_radiograph"
    assert "colour" in by_name["photo.jpg"]["failure"]["reason"]
    assert by_name["abdomen.png"]["status"] == "failed"
    assert by_name["abdomen.png"]["failure"]["code"] == "wrong_region"
    assert "abdomen" in by_name["abdomen.png"]["failure"]["reason"]
    assert by_name["abdomen.png"]["findings"] == []
    assert Study.objects.get(id=body["study"]["id"]).status == "read"  # one image read


def test_an_unreadable_stored_file_fails_its_read(cast: Cast, commit: Any, settings: Any) -> None:
    settings.XCALIBER_READ_WORKER = "off"
    body = capture(cast, [_png("a.png", phantom_png(7, region="thorax"))], commit)
    read = Read.objects.get(study_id=body["study"]["id"])
    with storage.local_copy(read.image.storage_key) as path:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # damaged on disk after validation
    reads_run_pending()
    read.refresh_from_db()
    assert read.status == ReadStatus.FAILED
    assert read.failure_code == "image_unreadable"
    assert Study.objects.get(id=read.study_id).status == "failed"


def test_a_small_low_contrast_image_reads_with_quality_flags(cast: Cast, commit: Any) -> None:
    phantom = generate(8, size=128, region="thorax")
    pixels = (0.45 + phantom.image * 0.08) * 255  # a washed-out film
    buffer = io.BytesIO()
    PILImage.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    body = capture(cast, [_png("small.png", buffer.getvalue())], commit)
    [read] = study_reads(cast, body["study"]["id"])["reads"]
    flags = {flag["code"] for flag in read["quality"]}
    assert {"low_resolution", "low_contrast"} <= flags, read
    assert "Image quality" in read["report"]


def test_one_crashing_image_fails_alone(cast: Cast, commit: Any, settings: Any, monkeypatch: Any) -> None:
    """If the batch itself fails, each image is retried alone, so only the culprit fails."""
    from inference.model.predictor import Predictor

    settings.XCALIBER_READ_WORKER = "off"
    body = capture(
        cast,
        [_png(f"{i}.png", phantom_png(20 + i, region="thorax")) for i in range(3)],
        commit,
    )
    real = Predictor.predict
    single_calls: list[int] = []

    def flaky(self: Predictor, images: Any, *args: Any) -> Any:
        if len(images) > 1:
            raise RuntimeError("CUDA error: an illegal memory access")  # the whole batch dies
        single_calls.append(1)
        if len(single_calls) == 2:  # the second image is the culprit
            raise RuntimeError("bad tensor")
        return real(self, images, *args)

    monkeypatch.setattr(Predictor, "predict", flaky)
    reads_run_pending()
    statuses = sorted(Read.objects.filter(study_id=body["study"]["id"]).values_list("status", flat=True))
    assert statuses == ["done", "done", "failed"]
    failed = Read.objects.get(study_id=body["study"]["id"], status="failed")
    assert failed.failure_code == "read_error"
    assert "RuntimeError" in failed.failure_reason


def test_claims_are_exclusive_and_results_are_written_once(cast: Cast, commit: Any, settings: Any) -> None:
    settings.XCALIBER_READ_WORKER = "off"
    body = capture(cast, [_png("a.png", phantom_png(9, region="thorax"))], commit)
    [first] = services.read_claim_batch(limit=4)
    assert services.read_claim_batch(limit=4) == []  # leased: nobody else gets it
    Read.objects.filter(id=first.id).update(lease_until="2000-01-01T00:00:00Z")  # the worker died
    [second] = services.read_claim_batch(limit=4)
    assert second.id == first.id
    assert second.attempts == 2
    assert second.claim_token != first.claim_token
    finding = services.FindingResult("cardiomegaly", 0.2, 0.5, False)
    common: dict[str, Any] = {"findings": [finding], "report": "r", "quality": []}
    common.update(region_probabilities={}, timings={})
    assert services.read_finish(read=first, **common) is False  # the stale claim writes nothing
    assert services.read_finish(read=second, **common) is True
    assert services.read_finish(read=second, **common) is False  # a second run: no second result
    assert Finding.objects.filter(read_id=first.id).count() == 1
    assert study_reads(cast, body["study"]["id"])["reads"][0]["status"] == "done"


def test_a_read_fails_after_its_last_attempt(cast: Cast, commit: Any, settings: Any) -> None:
    settings.XCALIBER_READ_WORKER = "off"
    settings.XCALIBER = {**settings.XCALIBER, "READ_MAX_ATTEMPTS": 2}
    capture(cast, [_png("a.png", phantom_png(10, region="thorax"))], commit)
    for _ in range(2):
        [claimed] = services.read_claim_batch(limit=1)
        Read.objects.filter(id=claimed.id).update(lease_until="2000-01-01T00:00:00Z")
    assert services.read_claim_batch(limit=1) == []
    read = Read.objects.get(id=claimed.id)
    assert read.status == ReadStatus.FAILED
    assert read.failure_code == "attempts_exhausted"


# --------------------------------------------------------------------------------------------------------
# Re-run, registry
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def read_study(cast: Cast, commit: Any) -> dict[str, Any]:
    data = phantom_png(12, region="thorax", species="canine", findings={"cardiomegaly": True})
    return capture(cast, [_png("t.png", data)], commit)["study"]  # type: ignore[no-any-return]


def test_rerun_with_a_named_version(
    cast: Cast, read_study: dict[str, Any], commit: Any, problem: Any
) -> None:
    url = f"/api/v1/studies/{read_study['id']}/reads/"
    vet = cast.client(Role.VET)
    shipped = active_model_for(species="canine", body_region="thorax")
    assert shipped is not None
    with commit(execute=True):
        response = vet.post(url, {"model_version": shipped.label}, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    assert response.status_code == 202, response.content
    [queued] = response.json()
    assert queued["status"] == "queued"
    assert queued["model"]["version"] == shipped.version
    assert len(study_reads(cast, read_study["id"])["reads"]) == 2
    assert Read.objects.get(id=queued["id"]).status == ReadStatus.DONE
    replay = vet.post(url, {"model_version": shipped.label}, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    assert replay.status_code == 202
    assert replay["Idempotent-Replayed"] == "true"
    assert Read.objects.filter(study_id=read_study["id"]).count() == 2
    assert AuditEntry.objects.filter(clinic=cast.clinic, action="study.reread").count() == 1

    before = Read.objects.count()
    problem(vet.post(url, {"model_version": "nope@9"}, format="json"), 422, "model_version_unknown")
    abdomen_only = make_model_version(body_regions=["abdomen"])
    problem(vet.post(url, {"model_version": abdomen_only.label}, format="json"), 422, "model_not_applicable")
    retired = make_model_version(status=ModelVersionStatus.RETIRED)
    problem(vet.post(url, {"model_version": str(retired.id)}, format="json"), 409, "model_version_retired")
    assert Read.objects.count() == before


def test_the_registry_lists_versions_with_metrics(cast: Cast) -> None:
    listed = cast.client(Role.VIEWER).get("/api/v1/models/").json()
    [shipped] = [v for v in listed if v["name"] == "xcaliber-phantom"]
    assert shipped["status"] == "active"
    findings = shipped["metrics"]["findings"]
    assert findings["cardiomegaly"]["auroc"] >= 0.95
    assert "sensitivity" in findings["cardiomegaly"]
    assert shipped["metrics"]["vhs"]["mae"] <= 0.3
    detail = cast.client(Role.VIEWER).get(f"/api/v1/models/{shipped['id']}/").json()
    assert detail["card"]["cases"]["test"] > 0
    assert detail["card"]["command"]


def test_staff_activate_and_retire_versions(cast: Cast, commit: Any, problem: Any) -> None:
    staff = make_user("ops@xcaliber.test")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    ops = bearer_client(staff)
    shipped = active_model_for(species="canine", body_region="thorax")
    assert shipped is not None
    candidate = make_model_version(weights_key=shipped.weights_key, weights_sha256=shipped.weights_sha256)
    problem(
        cast.client(Role.OWNER).post(f"/api/v1/models/{candidate.id}/activate/"),
        403,
        "platform_staff_required",
    )
    response = ops.post(f"/api/v1/models/{candidate.id}/activate/")
    assert response.status_code == 200, response.content
    assert response.json()["model_version"]["status"] == "active"
    assert [r["id"] for r in response.json()["retired"]] == [str(shipped.id)]
    assert active_model_for(species="canine", body_region="thorax") == candidate
    # Only thorax is covered by the candidate: the shipped version was retired for all its regions.
    assert active_model_for(species="canine", body_region="abdomen") is None
    body = capture(cast, [_png("t.png", phantom_png(13, region="thorax"))], commit)
    [read] = study_reads(cast, body["study"]["id"])["reads"]
    assert read["model"]["name"] == candidate.name
    assert ops.post(f"/api/v1/models/{candidate.id}/retire/").status_code == 200
    assert active_model_for(species="canine", body_region="thorax") is None
    body = capture(cast, [_png("t.png", phantom_png(14, region="thorax"))], commit)
    assert study_reads(cast, body["study"]["id"])["reads"] == []


def test_the_model_versions_command(capsys: Any) -> None:
    shipped = ModelVersion.objects.get(name="xcaliber-phantom")
    out = io.StringIO()
    call_command("model_versions", "list", stdout=out)
    assert shipped.label in out.getvalue()
    assert "active" in out.getvalue()
    call_command("model_versions", "retire", shipped.label, stdout=out)
    assert ModelVersion.objects.get(id=shipped.id).status == "retired"
    call_command("model_versions", "activate", str(shipped.id), stdout=out)
    assert ModelVersion.objects.get(id=shipped.id).status == "active"


# --------------------------------------------------------------------------------------------------------
# Feedback and the dataset export
# --------------------------------------------------------------------------------------------------------


def test_feedback_on_findings_and_a_corrected_vhs(
    cast: Cast, read_study: dict[str, Any], problem: Any
) -> None:
    [read] = study_reads(cast, read_study["id"])["reads"]
    vet = cast.client(Role.VET)
    base = f"/api/v1/reads/{read['id']}/findings"
    agreed = vet.post(
        f"{base}/cardiomegaly/feedback/", {"verdict": "agree", "note": "big heart"}, format="json"
    )
    assert agreed.status_code == 200, agreed.content
    assert agreed.json()["feedback"]["verdict"] == "agree"
    assert agreed.json()["feedback"]["by"] == cast.members[Role.VET].user.email
    vhs = {f["code"]: f for f in read["findings"]}["vhs"]["measurement"]
    long_axis = vhs["long_axis"]
    shorter = [
        long_axis[0],
        [(long_axis[0][0] + long_axis[1][0]) / 2, (long_axis[0][1] + long_axis[1][1]) / 2],
    ]
    corrected = vet.post(
        f"{base}/vhs/feedback/",
        {"verdict": "disagree", "corrected_vhs": {"long_axis": shorter, "short_axis": vhs["short_axis"]}},
        format="json",
    )
    assert corrected.status_code == 200, corrected.content
    value = corrected.json()["feedback"]["corrected_measurement"]["value"]
    assert value < vhs["value"]  # a shorter long axis scores lower
    assert AuditEntry.objects.filter(clinic=cast.clinic, action="finding.feedback").count() == 2
    problem(vet.post(f"{base}/cardiomegaly/feedback/", {"verdict": "maybe"}, format="json"), 400)
    problem(
        vet.post(
            f"{base}/cardiomegaly/feedback/",
            {"verdict": "disagree", "corrected_vhs": {"long_axis": shorter, "short_axis": shorter}},
            format="json",
        ),
        422,
        "correction_not_applicable",
    )
    problem(
        vet.post(
            f"{base}/vhs/feedback/",
            {"verdict": "agree", "corrected_vhs": {"long_axis": [[1, 2]]}},
            format="json",
        ),
        400,
    )
    problem(vet.post(f"{base}/hip_dysplasia/feedback/", {"verdict": "agree"}, format="json"), 404)
    assert AuditEntry.objects.filter(clinic=cast.clinic, action="finding.feedback").count() == 2


def _unzip(response: Any, folder: Path) -> Path:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    archive.extractall(folder)
    return folder


def test_verdicts_export_as_a_dataset_the_training_command_accepts(
    cast: Cast, commit: Any, tmp_path: Path
) -> None:
    files = [
        _png(
            f"{i}.png",
            phantom_png(30 + i, region="thorax", species="canine", findings={"cardiomegaly": i < 2}),
        )
        for i in range(5)
    ]
    body = capture(cast, files, commit)
    vet = cast.client(Role.VET)
    reads = study_reads(cast, body["study"]["id"])["reads"]
    for read in reads:
        for finding in read["findings"]:
            verdict = "unsure" if finding["code"] == "megaesophagus" else "agree"
            url = f"/api/v1/reads/{read['id']}/findings/{finding['code']}/feedback/"
            assert vet.post(url, {"verdict": verdict}, format="json").status_code == 200
    first = reads[0]
    flipped = next(f for f in first["findings"] if f["code"] == "pleural_effusion")
    vet.post(
        f"/api/v1/reads/{first['id']}/findings/pleural_effusion/feedback/",
        {"verdict": "disagree"},
        format="json",
    )
    problem_response = cast.client(Role.VET).get("/api/v1/feedback/export/")
    assert problem_response.status_code == 403
    response = cast.client(Role.ADMIN).get("/api/v1/feedback/export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    folder = _unzip(response, tmp_path / "dataset")
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    assert len(rows) == 5
    assert response["X-Dataset-Images"] == "5"
    by_image = {row["filename"].split("/")[1].split(".")[0]: row for row in rows}
    row = by_image[first["image_id"]]
    assert row["pleural_effusion"] == str(int(not flipped["positive"]))  # disagreeing flips the label
    assert row["megaesophagus"] == ""  # unsure is unknown, not negative
    assert row["species"] == "canine"
    assert row["region"] == "thorax"
    assert float(row["vhs"]) > 0
    assert float(row["heart_long_a_x"]) >= 0
    assert (folder / row["filename"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = io.StringIO()
    call_command(
        "train_model",
        "--folder",
        str(folder),
        "--output",
        str(tmp_path / "retrained"),
        "--size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--validation",
        "1",
        "--test",
        "1",
        "--width",
        "8",
        "--no-register",
        stdout=out,
    )
    assert (tmp_path / "retrained" / "weights.pt").exists(), out.getvalue()
    command_folder = tmp_path / "by-command"
    call_command("export_feedback", "--clinic", cast.clinic.slug, "--output", str(command_folder), stdout=out)
    assert (command_folder / "labels.csv").read_text() == (folder / "labels.csv").read_text()


def test_deleting_a_study_deletes_its_heatmaps(cast: Cast, read_study: dict[str, Any], commit: Any) -> None:
    assert any("/reads/" in key for key in stored_keys())
    with commit(execute=True):
        assert cast.client(Role.VET).delete(f"/api/v1/studies/{read_study['id']}/").status_code == 204
    assert stored_keys() == []
    assert not Read.objects.exists()


def test_read_list_query_count_is_constant(
    cast: Cast, commit: Any, django_assert_max_num_queries: Any, settings: Any
) -> None:
    settings.XCALIBER_READ_WORKER = "off"
    from tests.inference.factories import make_done_read

    for _ in range(4):
        make_done_read(cast.clinic)
    client = cast.client(Role.VIEWER)

    def count(page_size: int) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/api/v1/reads/?page_size={page_size}").status_code == 200
        return len(queries)

    assert count(1) == count(4)
    assert len(client.get("/api/v1/reads/?status=done").json()["results"]) == 4
    assert client.get("/api/v1/reads/?status=queued").json()["results"] == []


@pytest.mark.django_db(transaction=True)
def test_the_embedded_worker_thread_reads_after_commit(cast: Cast, settings: Any) -> None:
    """The embedded default: the upload's commit wakes the worker thread, which reads in the background."""
    import time

    from django.db import connection

    if connection.vendor != "postgresql":  # the e2e embedded test covers SQLite with a real server
        pytest.skip("the test database of SQLite is in memory and shared-cache: no concurrent writers")
    settings.XCALIBER_READ_WORKER = "thread"
    response = cast.client(Role.VET).post(
        "/api/v1/captures/",
        {
            "name": "Bori",
            "species": "canine",
            "body_region": "thorax",
            "files": [_png("a.png", phantom_png(40, region="thorax"))],
        },
        format="multipart",
    )
    assert response.status_code == 201
    study_id = response.json()["study"]["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses = list(Read.objects.filter(study_id=study_id).values_list("status", flat=True))
        if statuses == ["done"]:
            break
        time.sleep(0.05)
    from inference.reads.dispatch import embedded_worker_stop

    embedded_worker_stop()  # before the test database goes away under it
    assert statuses == ["done"]


def test_a_trained_model_registers_then_reads_once_activated(
    cast: Cast, commit: Any, s3_storage: Any, settings: Any, tmp_path: Path
) -> None:
    """train_model stores weights, card and plots in the object store (S3 here) and registers a candidate;
    once staff activate it, reads load its weights from the store, checked against their SHA-256."""
    settings.DATA_DIR = tmp_path / "data"
    out = io.StringIO()
    call_command(
        "train_model",
        *("--phantoms", "60", "--size", "64", "--epochs", "1", "--width", "8", "--batch-size", "8"),
        *("--name", "clinic-thorax", "--version", "0.1.0", "--output", str(tmp_path / "run")),
        stdout=out,
    )
    version = ModelVersion.objects.get(name="clinic-thorax", version="0.1.0")
    assert version.status == ModelVersionStatus.CANDIDATE
    assert version.weights_key == "models/clinic-thorax/0.1.0/weights.pt"
    assert {"models/clinic-thorax/0.1.0/weights.pt", "models/clinic-thorax/0.1.0/model-card.json"} <= set(
        s3_storage.keys()
    )
    assert set(version.metrics["findings"]) == set(version.labels)
    with pytest.raises(Exception, match="already registered"):
        call_command(
            "train_model",
            *("--phantoms", "60", "--size", "64", "--epochs", "1", "--width", "8"),
            *("--name", "clinic-thorax", "--version", "0.1.0", "--output", str(tmp_path / "again")),
            stdout=out,
        )
    assert not (tmp_path / "again").exists()  # refused before training, not after
    call_command("model_versions", "activate", version.label, stdout=out)
    body = capture(cast, [_png("t.png", phantom_png(60, region="thorax"))], commit)
    read = Read.objects.get(study_id=body["study"]["id"])
    assert read.model_version_id == version.id
    assert read.status in {ReadStatus.DONE, ReadStatus.FAILED}
    assert read.failure_code in {"", "wrong_region"}  # loaded and ran (a 60-phantom model is weak)
    assert (tmp_path / "data" / "models" / f"{version.weights_sha256}.pt").exists()
