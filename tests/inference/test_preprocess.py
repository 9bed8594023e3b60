"""Preprocessing: letterbox geometry, decoding through the preview path, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from inference.model.preprocess import (
    NORMALISE_MEAN,
    NORMALISE_STD,
    Letterbox,
    letterbox,
    load_display,
    normalise,
    to_batch,
)
from tests.records import corpus
from xcaliber.lib import radiograph
from xcaliber.lib.radiograph import display_array


@pytest.mark.parametrize(("width", "height"), [(500, 300), (300, 500), (256, 256), (1001, 77)])
def test_letterbox_round_trips_coordinates(width: int, height: int) -> None:
    box = Letterbox.fit(width, height, 256)
    for x, y in [(0.0, 0.0), (width, height), (width / 3, height * 0.7), (12.5, height - 1)]:
        mx, my = box.to_model(x, y)
        assert 0.0 <= mx <= 256.0
        assert 0.0 <= my <= 256.0
        assert box.to_image(mx, my) == pytest.approx((x, y), abs=1e-9)
    # The image's corners land on the content box, which is centred with the padding split evenly.
    assert box.to_model(0, 0) == (box.offset_x, box.offset_y)
    assert box.to_model(width, height) == pytest.approx(
        (box.offset_x + box.content_width, box.offset_y + box.content_height)
    )
    assert max(box.content_width, box.content_height) == 256
    assert abs((256 - box.content_width) - 2 * box.offset_x) <= 1
    assert abs((256 - box.content_height) - 2 * box.offset_y) <= 1


@pytest.mark.parametrize(("width", "height"), [(320, 200), (200, 320)])
def test_letterbox_pads_with_zero_and_keeps_the_range(width: int, height: int) -> None:
    image = np.full((height, width), 255, dtype=np.uint8)
    image[0, 0] = 0
    out, box = letterbox(image, 128)
    assert out.shape == (128, 128)
    assert out.dtype == np.float32
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    content = np.zeros((128, 128), dtype=bool)
    content[
        box.offset_y : box.offset_y + box.content_height, box.offset_x : box.offset_x + box.content_width
    ] = True
    assert (out[~content] == 0).all()
    assert (~content).any()
    assert out[content].mean() > 0.95  # the white image fills the content box
    assert box.unpad(out).shape == (box.content_height, box.content_width)


def test_letterbox_maps_a_bright_point_to_where_to_model_says() -> None:
    image = np.zeros((300, 600), dtype=np.uint8)
    image[200:206, 450:456] = 255  # centre (453, 203)
    out, box = letterbox(image, 256)
    row, column = np.unravel_index(int(np.argmax(out)), out.shape)
    mx, my = box.to_model(453, 203)
    assert abs(column + 0.5 - mx) <= 1.5
    assert abs(row + 0.5 - my) <= 1.5


def test_float_input_and_resizing_back_to_the_image() -> None:
    image = np.linspace(0, 1, 90 * 140, dtype=np.float32).reshape(90, 140)
    out, box = letterbox(image, 64)
    back = box.to_image_array(out)
    assert back.shape == image.shape
    assert np.abs(back - image).mean() < 0.02


def test_letterbox_refuses_colour() -> None:
    with pytest.raises(ValueError, match="2-D"):
        letterbox(np.zeros((4, 4, 3), dtype=np.uint8), 32)


def test_to_batch_normalises_and_records_each_letterbox() -> None:
    images = [np.full((40, 80), 255, dtype=np.uint8), np.zeros((90, 30), dtype=np.uint8)]
    batch, boxes = to_batch(images, 64)
    assert batch.shape == (2, 1, 64, 64)
    assert batch.dtype == torch.float32
    assert [(b.width, b.height) for b in boxes] == [(80, 40), (30, 90)]
    padding = (0.0 - NORMALISE_MEAN) / NORMALISE_STD
    assert float(batch[0, 0, 0, 0]) == pytest.approx(padding)
    assert float(batch[0, 0, 32, 32]) == pytest.approx((1.0 - NORMALISE_MEAN) / NORMALISE_STD)
    assert torch.equal(normalise(torch.tensor([NORMALISE_MEAN])), torch.tensor([0.0]))


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "source", "data"),
    [
        ("x.png", "png", corpus.png_bytes(bits=16)),
        ("x.jpg", "jpeg", corpus.jpeg_bytes()),
        ("x.dcm", "dicom", corpus.dicom_bytes(photometric="MONOCHROME1", window=(30000.0, 40000.0))),
    ],
)
def test_load_display_is_the_preview_picture(tmp_path: Path, name: str, source: str, data: bytes) -> None:
    path = _write(tmp_path, name, data)
    shown = load_display(path, source, 256)
    assert shown.dtype == np.uint8
    assert shown.shape == (256, 320)
    np.testing.assert_array_equal(shown, display_array(path, source, 256))
    assert int(shown.max()) - int(shown.min()) > 100  # windowed, not a flat grey


def test_monochrome1_comes_out_inverted(tmp_path: Path) -> None:
    window = (30000.0, 40000.0)
    mono1 = _write(tmp_path, "m1.dcm", corpus.dicom_bytes(photometric="MONOCHROME1", window=window))
    mono2 = _write(tmp_path, "m2.dcm", corpus.dicom_bytes(photometric="MONOCHROME2", window=window))
    inverted = load_display(mono1, "dicom", 256)
    plain = load_display(mono2, "dicom", 256)
    np.testing.assert_array_equal(inverted, 255 - plain)
    # And the window was applied: the same pixels without one are spread differently.
    unwindowed = load_display(_write(tmp_path, "m3.dcm", corpus.dicom_bytes()), "dicom", 256)
    assert not np.array_equal(plain, unwindowed)


@pytest.mark.parametrize("window", [(30000.0, 40000.0), None])
def test_the_window_computed_in_bands_is_the_window_of_the_whole_image(
    tmp_path: Path, window: tuple[float, float] | None
) -> None:
    # 700 x 800 pixels are three bands (327, 327 and 46 rows of 2**18 pixels at most): every row is
    # windowed once, with the same arithmetic as over the whole image at once.
    path = _write(tmp_path, "w.dcm", corpus.dicom_bytes(rows=700, columns=800, window=window))
    raw = pydicom.dcmread(path).pixel_array
    values = raw.astype(np.float32)
    if window is None:
        expected = radiograph._linear(values, *radiograph._percentiles(raw))
    else:
        expected = radiograph._window(values, *window)
    shown = display_array(path, "dicom", 1024)
    assert shown.shape == (700, 800)
    np.testing.assert_array_equal(shown, expected)
    assert int(shown.max()) - int(shown.min()) > 100
