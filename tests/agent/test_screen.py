"""Screen geometry arithmetic (hand-computed cases), preprocessing and real capture on Xvfb."""

from __future__ import annotations

import pytest
from PIL import Image

from agent.screen import ScreenCapture, ScreenGeometry, detect_geometry, preprocess_screenshot


@pytest.mark.parametrize(
    ("geometry", "point", "expected"),
    [
        # Plain X11 1280x800: pixel column floor(x * 1280), 1.0 kept inside the last column.
        (ScreenGeometry(0, 0, 1280, 800), (0.0, 0.0), (0, 0)),
        (ScreenGeometry(0, 0, 1280, 800), (0.5, 0.5), (640, 400)),
        (ScreenGeometry(0, 0, 1280, 800), (1.0, 1.0), (1279, 799)),
        (ScreenGeometry(0, 0, 1280, 800), (0.312, 0.54), (399, 432)),
        # Retina: 2560x1600 physical, scale 2, so pyautogui's desktop is 1280x800.
        (ScreenGeometry(0, 0, 2560, 1600, 2.0, 2.0), (0.5, 0.5), (640, 400)),
        (ScreenGeometry(0, 0, 2560, 1600, 2.0, 2.0), (1.0, 1.0), (1279, 799)),
        (ScreenGeometry(0, 0, 2560, 1600, 2.0, 2.0), (0.25, 0.75), (320, 600)),
        # 150 % scaling: 1920x1080 physical is 1280x720 logical; 1919 / 1.5 = 1279.3.
        (ScreenGeometry(0, 0, 1920, 1080, 1.5, 1.5), (0.5, 0.5), (640, 360)),
        (ScreenGeometry(0, 0, 1920, 1080, 1.5, 1.5), (1.0, 1.0), (1279, 719)),
        # Second monitor right of a 1920-wide primary.
        (ScreenGeometry(1920, 0, 1280, 1024), (0.0, 0.0), (1920, 0)),
        (ScreenGeometry(1920, 0, 1280, 1024), (1.0, 1.0), (3199, 1023)),
        (ScreenGeometry(1920, 0, 1280, 1024), (0.5, 0.25), (2560, 256)),
        # Monitor left of the primary (negative offset, as on Windows).
        (ScreenGeometry(-1280, 0, 1280, 1024), (0.0, 0.5), (-1280, 512)),
        # Retina monitor at physical x = 2560 beside a Retina primary: logical x starts at 1280.
        (ScreenGeometry(2560, 0, 2560, 1600, 2.0, 2.0), (0.0, 0.0), (1280, 0)),
        (ScreenGeometry(2560, 0, 2560, 1600, 2.0, 2.0), (0.5, 1.0), (1920, 799)),
        # Monitor below, offset in y.
        (ScreenGeometry(0, 1080, 1920, 1080), (0.1, 0.1), (192, 1188)),
    ],
)
def test_to_pixels(geometry, point, expected):
    assert geometry.to_pixels(*point) == expected


@pytest.mark.parametrize("point", [(-0.001, 0.5), (0.5, 1.001), (float("nan"), 0.5), (2.0, 2.0)])
def test_to_pixels_rejects_outside(point):
    with pytest.raises(ValueError, match="outside the screen"):
        ScreenGeometry(0, 0, 1280, 800).to_pixels(*point)


@pytest.mark.parametrize(
    "geometry",
    [
        ScreenGeometry(0, 0, 1280, 800),
        ScreenGeometry(1920, 0, 1280, 1024),
        ScreenGeometry(0, 0, 2560, 1600, 2.0, 2.0),
    ],
)
def test_from_pixels_inverts_to_pixels(geometry):
    left, top, right, bottom = geometry.logical_box()
    for pixel in [(left, top), (right, bottom), ((left + right) // 2, (top + bottom) // 3)]:
        assert geometry.to_pixels(*geometry.from_pixels(*pixel)) == pixel


def test_invalid_geometry():
    with pytest.raises(ValueError, match="invalid monitor size"):
        ScreenGeometry(0, 0, 0, 800)
    with pytest.raises(ValueError, match="invalid HiDPI scale"):
        ScreenGeometry(0, 0, 1280, 800, 0.0, 1.0)


TWO_MONITORS = [
    {"left": 0, "top": 0, "width": 3200, "height": 1080},
    {"left": 0, "top": 0, "width": 1920, "height": 1080},
    {"left": 1920, "top": 0, "width": 1280, "height": 1024, "is_primary": True},
]


def test_detect_geometry_picks_primary():
    geometry = detect_geometry(TWO_MONITORS, (3200, 1080))
    assert geometry == ScreenGeometry(1920, 0, 1280, 1024, 1.0, 1.0)


def test_detect_geometry_monitor_index():
    assert detect_geometry(TWO_MONITORS, (3200, 1080), index=1) == ScreenGeometry(0, 0, 1920, 1080)
    with pytest.raises(ValueError, match="monitors 1..2"):
        detect_geometry(TWO_MONITORS, (3200, 1080), index=3)


def test_detect_geometry_hidpi_scale():
    monitors = [{"left": 0, "top": 0, "width": 2560, "height": 1600}] * 2
    assert detect_geometry(monitors, (1280, 800)) == ScreenGeometry(0, 0, 2560, 1600, 2.0, 2.0)


def test_detect_geometry_points_monitor():
    # macOS: mss lists the monitor in points (1440x900) but grabs 2880x1800 pixels.
    monitors = [{"left": 0, "top": 0, "width": 1440, "height": 900}] * 2
    geometry = detect_geometry(monitors, (1440, 900), capture_size=(2880, 1800))
    assert geometry == ScreenGeometry(0, 0, 2880, 1800, 2.0, 2.0)
    assert geometry.to_pixels(1.0, 1.0) == (1439, 899)


def test_preprocess_keeps_aspect_and_pads():
    image = Image.new("RGB", (1280, 800), (10, 200, 30))
    result = preprocess_screenshot(image, (448, 448))
    assert result.size == (448, 448)
    # scale = min(448 / 1280, 448 / 800) = 0.35, so the content is 448 x 280 at the top left.
    assert result.getpixel((447, 279)) == (10, 200, 30)
    assert result.getpixel((0, 280)) == (0, 0, 0)
    assert result.getpixel((447, 447)) == (0, 0, 0)


def test_preprocess_tall_target():
    image = Image.new("RGB", (1280, 800), (255, 255, 255))
    result = preprocess_screenshot(image, (800, 400))  # (H, W): width limits, scale 0.3125
    assert result.size == (400, 800)
    assert result.getpixel((399, 249)) == (255, 255, 255)
    assert result.getpixel((399, 250)) == (0, 0, 0)


def test_preprocess_exact_fit_has_no_padding():
    image = Image.new("RGB", (1280, 800), (1, 2, 3))
    result = preprocess_screenshot(image, (400, 640))
    assert result.size == (640, 400)
    assert result.getpixel((639, 399)) == (1, 2, 3)


@pytest.mark.desktop
def test_capture_sees_window_pixels(tk_window):
    left, top, width, height = tk_window.state()["widgets"]["marker"]
    expected = (255, 0, 255)  # the marker's colour, #ff00ff
    with ScreenCapture() as capture:
        image = capture.grab()
    assert image.size == (1280, 800)
    assert image.mode == "RGB"
    assert image.getpixel((left + width // 2, top + height // 2)) == expected
    assert image.getpixel((left + 2, top + 2)) == expected
    # Just outside the marker the window background shows, not magenta.
    assert image.getpixel((left - 3, top + height // 2)) != expected
    assert image.getpixel((5, 5)) != expected


@pytest.mark.desktop
def test_capture_geometry_on_xvfb(xvfb_display):
    with ScreenCapture() as capture:
        geometry = capture.geometry()
    assert geometry == ScreenGeometry(0, 0, xvfb_display.width, xvfb_display.height, 1.0, 1.0)
