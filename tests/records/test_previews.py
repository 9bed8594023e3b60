"""Previews and thumbnails (made after commit, off the request path) and downloads of an image's files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from clinics.records import previews, render, tasks
from clinics.records.models import Image
from clinics.tenancy.models import Role
from tests.conftest import Cast
from tests.records import corpus
from tests.records.factories import make_image, make_study, stored_keys
from xcaliber.lib import radiograph
from xcaliber.lib.activity import ActivityMark

pytestmark = pytest.mark.django_db


def _upload(cast: Cast, data: bytes, content_type: str, capture: Any) -> Image:
    study = make_study(cast.clinic)
    with capture() as callbacks:
        response = cast.client(Role.TECHNICIAN).post(
            f"/api/v1/studies/{study.id}/images/", data, content_type=content_type
        )
    assert response.status_code == 201, response.content
    image = Image.objects.get(id=response.json()["images"][0]["id"])
    # The preview is queued after commit, not made in the request.
    assert image.preview_status == "pending"
    assert _queued(callbacks).count(tasks.image_derivatives_make) == 1
    return image


def _queued(callbacks: list[Any]) -> list[Any]:
    """The functions the on-commit callbacks hand to the background runner (their closures' tasks)."""
    return [cell.cell_contents for callback in callbacks for cell in (callback.__closure__ or ())]


def _preview_pixels(cast: Cast, image: Image) -> np.ndarray:
    response: Any = cast.client(Role.VIEWER).get(f"/api/v1/images/{image.id}/preview/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/jpeg"
    with PILImage.open(io.BytesIO(b"".join(response.streaming_content))) as preview:
        assert (preview.format, preview.mode) == ("JPEG", "L")
        return np.asarray(preview)


def test_a_16_bit_png_gets_a_windowed_8_bit_preview_and_a_thumbnail(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    image = _upload(
        cast,
        corpus.png_bytes(bits=16, width=640, height=512),
        "image/png",
        django_capture_on_commit_callbacks,
    )
    assert tasks.image_derivatives_make(image.id) == "ready"
    image.refresh_from_db()
    pixels = _preview_pixels(cast, image)
    assert pixels.shape == (512, 640)
    assert pixels.min() == 0
    assert pixels.max() == 255  # the window spans the image's own range, not 0..65535
    thumbnail: Any = cast.client(Role.VIEWER).get(f"/api/v1/images/{image.id}/thumbnail/")
    with PILImage.open(io.BytesIO(b"".join(thumbnail.streaming_content))) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) == 256
    assert sorted(stored_keys()) == sorted(image.stored_keys)
    # Idempotent: a second run changes nothing.
    assert tasks.image_derivatives_make(image.id) == "ready"
    assert sorted(stored_keys()) == sorted(image.stored_keys)


def test_dicom_window_is_applied_and_monochrome1_is_inverted(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    shown = {}
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        data = corpus.dicom_bytes(photometric=photometric, window=(2000.0, 3000.0), seed=5, bits=16)
        image = _upload(cast, data, "application/dicom", django_capture_on_commit_callbacks)
        assert tasks.image_derivatives_make(image.id) == "ready"
        image.refresh_from_db()
        shown[photometric] = _preview_pixels(cast, image).astype(int)
    pattern = corpus.pixel_pattern(256, 320, bits=16, seed=5).astype(float)
    expected = np.clip(((pattern - 1999.5) / 2999 + 0.5) * 255, 0, 255)
    # The preview is a JPEG (quality 90): equal to the window up to compression noise.
    assert np.abs(shown["MONOCHROME2"] - expected).mean() < 2
    assert np.abs(shown["MONOCHROME1"] - (255 - expected)).mean() < 2


@pytest.mark.parametrize(
    ("window", "rescale"),
    [
        ((2000.0, 3000.0), None),
        ((900.0, 1500.0), (-1024.0, 1.0)),
        ((40.0, 400.0), (-1024.0, 0.5)),
        (None, None),
    ],
)
def test_the_display_window_is_exact_before_compression(
    tmp_path: Path, window: tuple[float, float] | None, rescale: tuple[float, float] | None
) -> None:
    """The windowing itself (before JPEG): the DICOM linear window on rescaled values, or percentiles."""
    path = tmp_path / "a.dcm"
    path.write_bytes(corpus.dicom_bytes(window=window, rescale=rescale, seed=6, bits=16))
    stored = corpus.pixel_pattern(256, 320, bits=16, seed=6).astype(np.float64)
    intercept, slope = rescale or (0.0, 1.0)
    values = stored * slope + intercept
    if window is None:
        low, high = np.percentile(stored, radiograph.PERCENTILE_WINDOW)
        expected = np.clip((stored - low) * 255 / (high - low), 0, 255)
    else:
        center, width = window
        expected = np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255, 0, 255)
    shown = radiograph.dicom_display(path, 2048).astype(int)
    assert np.abs(shown - expected.astype(int)).max() <= 1
    inverted = tmp_path / "b.dcm"
    inverted.write_bytes(
        corpus.dicom_bytes(window=window, rescale=rescale, seed=6, bits=16, photometric="MONOCHROME1")
    )
    assert np.array_equal(
        radiograph.dicom_display(inverted, 2048), 255 - radiograph.dicom_display(path, 2048)
    )


def test_every_transfer_syntax_previews(cast: Cast, django_capture_on_commit_callbacks: Any) -> None:
    for syntax in sorted(corpus.TRANSFER_SYNTAXES):
        bits = 8 if syntax in corpus.BASELINE_ONLY_8BIT else 16
        data = corpus.dicom_bytes(transfer_syntax=syntax, bits=bits, seed=3)
        image = _upload(cast, data, "application/dicom", django_capture_on_commit_callbacks)
        assert tasks.image_derivatives_make(image.id) == "ready", syntax


def test_only_the_first_frame_of_a_multiframe_object_is_rendered(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    image = _upload(
        cast, corpus.dicom_bytes(frames=4, seed=8), "application/dicom", django_capture_on_commit_callbacks
    )
    assert image.frames == 4
    assert tasks.image_derivatives_make(image.id) == "ready"
    image.refresh_from_db()
    assert _preview_pixels(cast, image).shape == (256, 320)


def test_a_pending_preview_is_409_and_the_original_downloads(
    cast: Cast, problem, django_capture_on_commit_callbacks: Any
) -> None:
    data = corpus.jpeg_bytes(seed=9)
    image = _upload(cast, data, "image/jpeg", django_capture_on_commit_callbacks)
    client = cast.client(Role.VIEWER)
    problem(client.get(f"/api/v1/images/{image.id}/preview/"), 409, "preview_pending")
    original: Any = client.get(f"/api/v1/images/{image.id}/original/")
    assert original.status_code == 200
    assert original["Content-Type"] == "image/jpeg"
    assert original["Content-Length"] == str(len(data))
    assert original["Content-Disposition"] == f'attachment; filename="{image.id}.jpg"'
    assert b"".join(original.streaming_content) == data


def test_an_undecodable_image_marks_its_preview_failed(
    cast: Cast, problem, django_capture_on_commit_callbacks: Any
) -> None:
    image = _upload(cast, corpus.png_bytes(), "image/png", django_capture_on_commit_callbacks)
    from django.core.files.storage import default_storage

    default_storage.delete(image.storage_key)
    default_storage.save(image.storage_key, io.BytesIO(b"\x89PNG\r\n\x1a\nbroken"))
    assert tasks.image_derivatives_make(image.id) == "failed"
    image.refresh_from_db()
    assert image.preview_error
    problem(cast.client(Role.VIEWER).get(f"/api/v1/images/{image.id}/preview/"), 409, "preview_failed")


def test_a_deleted_image_leaves_no_preview_behind(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    image = _upload(cast, corpus.png_bytes(), "image/png", django_capture_on_commit_callbacks)
    image_id = image.id
    with django_capture_on_commit_callbacks(execute=True):
        assert cast.client(Role.VET).delete(f"/api/v1/studies/{image.study_id}/").status_code == 204
    assert tasks.image_derivatives_make(image_id) == "missing"
    assert stored_keys() == []


def test_with_s3_downloads_redirect_to_short_lived_presigned_urls(
    cast: Cast, s3_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    data = corpus.png_bytes(bits=16, seed=12)
    image = _upload(cast, data, "image/png", django_capture_on_commit_callbacks)
    assert tasks.image_derivatives_make(image.id) == "ready"
    client = cast.client(Role.VIEWER)
    response = client.get(f"/api/v1/images/{image.id}/original/")
    assert response.status_code == 302
    url = response["Location"]
    assert url.startswith(s3_storage.server.endpoint)
    assert "X-Amz-Expires=300" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    # Without the signature the object is private.
    assert requests.get(url.split("?", 1)[0], timeout=10).status_code == 403
    preview = requests.get(client.get(f"/api/v1/images/{image.id}/preview/")["Location"], timeout=10)
    assert preview.headers["Content-Type"] == "image/jpeg"
    with PILImage.open(io.BytesIO(preview.content)) as shown:
        assert shown.mode == "L"


def test_previews_of_an_s3_dicom_stream_the_object_to_a_temporary_copy(
    cast: Cast, s3_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    study = make_study(cast.clinic)
    upload = SimpleUploadedFile(
        "a.dcm", corpus.dicom_bytes(transfer_syntax="JPEGLSLossless"), "application/dicom"
    )
    with django_capture_on_commit_callbacks():
        response = cast.client(Role.TECHNICIAN).post(
            f"/api/v1/studies/{study.id}/images/", {"files": [upload]}, format="multipart"
        )
    image = Image.objects.get(id=response.json()["images"][0]["id"])
    assert tasks.image_derivatives_make(image.id) == "ready"
    image.refresh_from_db()
    assert sorted(s3_storage.keys()) == sorted(image.stored_keys)


def test_the_backfill_command_makes_previews_lost_in_a_restart(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    from io import StringIO

    from django.core.management import call_command

    first = _upload(cast, corpus.png_bytes(seed=1), "image/png", django_capture_on_commit_callbacks)
    second = _upload(cast, corpus.jpeg_bytes(seed=2), "image/jpeg", django_capture_on_commit_callbacks)
    out = StringIO()
    call_command("images_previews_backfill", stdout=out)
    assert "2 pending" in out.getvalue()
    assert set(Image.objects.values_list("preview_status", flat=True)) == {"ready"}
    assert sorted(stored_keys()) == sorted(
        first.stored_keys[:1]
        + second.stored_keys[:1]
        + [key for image in Image.objects.all() for key in (image.preview_key, image.thumbnail_key)]
    )


def _priority_around_yield() -> tuple[int, int]:
    """This thread's nice value before and after ``derivatives_yield_cpu`` (called twice)."""
    own = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, own)
    tasks.derivatives_yield_cpu()
    tasks.derivatives_yield_cpu()
    return before, os.getpriority(os.PRIO_PROCESS, own)


def _on_a_thread(function: Any) -> Any:
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
def test_derivatives_run_below_the_uploads_cpu_priority_on_the_background_thread(settings: Any) -> None:
    settings.XCALIBER_BACKGROUND = "thread"
    before, after = _on_a_thread(_priority_around_yield)
    assert after == max(before, render.DERIVATIVES_NICENESS)
    # Never the main thread (a command's, or the test runner's) ...
    before, after = _priority_around_yield()
    assert after == before
    # ... nor any thread when background work runs inline (at commit, in the request's thread).
    settings.XCALIBER_BACKGROUND = "inline"
    before, after = _on_a_thread(_priority_around_yield)
    assert after == before


def _render_on_a_thread(path: Path) -> Any:
    """``render.render`` called from a fresh (background) thread; its result, or its exception raised here."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(render.render(path, "dicom", preview_side=512, thumbnail_side=64))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


@pytest.fixture
def render_child(settings: Any) -> Any:
    settings.XCALIBER_BACKGROUND = "thread"
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": True}
    yield render
    render.shutdown()


def test_a_background_thread_renders_in_a_child_process_below_the_uploads_priority(
    render_child: Any, tmp_path: Path
) -> None:
    path = tmp_path / "dx.dcm"
    path.write_bytes(corpus.dicom_bytes(rows=300, columns=240, bits=16, seed=5))
    made = _render_on_a_thread(path)
    # The same pixels as rendering here, made by another process that runs at a lower priority.
    assert made == previews.render(path, "dicom", preview_side=512, thumbnail_side=64)
    (child,) = render.child_pids()
    assert child != os.getpid()
    if sys.platform.startswith("linux"):
        assert os.getpriority(os.PRIO_PROCESS, child) >= render.DERIVATIVES_NICENESS
        assert os.sched_getscheduler(child) == os.SCHED_IDLE  # only the cores nothing else wants
    # One child serves every preview.
    _render_on_a_thread(path)
    assert render.child_pids() == [child]


def test_a_child_that_dies_is_replaced_and_the_preview_still_made(render_child: Any, tmp_path: Path) -> None:
    path = tmp_path / "dx.dcm"
    path.write_bytes(corpus.dicom_bytes(rows=300, columns=240, bits=16, seed=6))
    _render_on_a_thread(path)
    (first,) = render.child_pids()
    os.kill(first, 9)
    made = _render_on_a_thread(path)
    with PILImage.open(io.BytesIO(made.preview_jpeg)) as preview:
        assert preview.size == (240, 300)
    (second,) = render.child_pids()
    assert second != first


def test_a_decoder_error_in_the_child_reaches_the_caller_as_itself(render_child: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(corpus.dicom_bytes(rows=300, columns=240, bits=16, seed=7)[:2000])
    with pytest.raises(ValueError, match="reshape"):  # pydicom's own error, pickled back
        _render_on_a_thread(path)
    assert len(render.child_pids()) == 1


def test_commands_inline_work_and_the_switch_render_in_the_calling_thread(settings: Any) -> None:
    settings.XCALIBER_BACKGROUND = "thread"
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": True}
    assert _on_a_thread(render.in_child_process)
    assert not render.in_child_process()  # the main thread: a management command
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": False}
    assert not _on_a_thread(render.in_child_process)
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": True}
    settings.XCALIBER_BACKGROUND = "inline"
    assert not _on_a_thread(render.in_child_process)


ORPHAN_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xcaliber.settings")
import django
django.setup()
from clinics.records import render
render._pool().submit(os.getpid).result()
print(render.child_pids()[0], flush=True)
os._exit(0)  # the server dies without shutting its pool down (as under SIGKILL)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_leaves_with_a_server_that_dies(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(Path(__file__).resolve().parents[2])],
        capture_output=True,
        text=True,
        timeout=60,  # an orphaned child would hold the output pipe open until then
        env={**os.environ, "XCALIBER_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 10 * render.PARENT_CHECK_SECONDS + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (here, init) has yet to reap it


@pytest.mark.django_db(transaction=True)  # the preview runs on another thread, with its own connection
def test_on_the_background_thread_a_preview_waits_for_the_uploads_arriving_until_its_deadline(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_image(make_study(cast.clinic), with_previews=False)
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": False, "PREVIEW_DEFER_SECONDS": 7}
    waits: list[tuple[str, float]] = []

    def wait_until_quiet(self: ActivityMark, *, deadline: float) -> float:
        waits.append((self.path.name, deadline))
        assert Image.objects.get(id=image.id).preview_status == "pending"  # before rendering
        return 0.0

    monkeypatch.setattr(ActivityMark, "wait_until_quiet", wait_until_quiet)
    settings.XCALIBER_BACKGROUND = "thread"

    assert _on_a_thread(lambda: tasks.image_derivatives_make(image.id)) == "ready"
    assert waits == [("uploads-arriving", image.created_at.timestamp() + 7)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["main thread", "inline", "never defer"])
def test_commands_inline_work_and_a_zero_deferral_never_wait_for_uploads(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    image = make_image(make_study(cast.clinic), with_previews=False)
    settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_PROCESS": False}
    settings.XCALIBER_BACKGROUND = "inline" if where == "inline" else "thread"
    if where == "never defer":
        settings.XCALIBER = {**settings.XCALIBER, "PREVIEW_DEFER_SECONDS": 0}

    def must_not_wait(self: ActivityMark, *, deadline: float) -> float:
        raise AssertionError("waited for uploads")

    monkeypatch.setattr(ActivityMark, "wait_until_quiet", must_not_wait)
    make = lambda: tasks.image_derivatives_make(image.id)  # noqa: E731
    assert (make() if where == "main thread" else _on_a_thread(make)) == "ready"
