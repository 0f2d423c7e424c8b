"""Screen capture, screen geometry and screenshot preprocessing.

Two pixel spaces meet here. mss captures physical pixels; pyautogui moves in the pixels of the
windowing system, which are logical pixels under HiDPI scaling (macOS Retina, Windows display
scaling) and equal to the physical ones on plain X11. `ScreenGeometry.to_pixels` is the one
place where an action's normalised coordinates become pyautogui pixels.

Run `python -m agent.screen --bench` on a display to measure capture plus preprocessing.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

BENCH_SIZE = (1280, 800)  # width, height of the screen the capture benchmark expects
BENCH_TARGET_MS = 15.0


@dataclass(frozen=True)
class ScreenGeometry:
    """One monitor: its rectangle in physical pixels and the HiDPI scale of the desktop.

    `left` and `top` are the monitor's offset in the desktop's physical pixel coordinates.
    `scale_x` and `scale_y` are physical pixels per logical (pyautogui) pixel: 1.0 on X11,
    2.0 on a Retina display.
    """

    left: int
    top: int
    width: int
    height: int
    scale_x: float = 1.0
    scale_y: float = 1.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"invalid monitor size {self.width}x{self.height}: both must be positive")
        if not (self.scale_x > 0 and self.scale_y > 0):
            raise ValueError(f"invalid HiDPI scale {self.scale_x}x{self.scale_y}: both must be positive")

    @property
    def size(self) -> tuple[int, int]:
        """Physical (width, height) of the monitor, the size of its screenshots."""
        return self.width, self.height

    def logical_box(self) -> tuple[int, int, int, int]:
        """Return the monitor as (left, top, right, bottom) in logical pixels, right/bottom inclusive."""
        left = math.ceil(self.left / self.scale_x)
        top = math.ceil(self.top / self.scale_y)
        right = math.floor((self.left + self.width) / self.scale_x) - 1
        bottom = math.floor((self.top + self.height) / self.scale_y) - 1
        return left, top, right, bottom

    def to_pixels(self, x: float, y: float) -> tuple[int, int]:
        """Map normalised (x, y) in 0..1 of this monitor to the logical pixel pyautogui moves to.

        x = 0 is the left edge of the first pixel column and x = 1 the right edge of the last,
        so the point lands in pixel column floor(x * width), with 1.0 kept inside the last
        column. The physical position is then shifted by the monitor offset and divided by the
        HiDPI scale. Raises ValueError outside 0..1, so nothing moves on a bad coordinate.
        """
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"coordinates ({x}, {y}) are outside the screen: both must be in 0..1")
        physical_x = min(math.floor(x * self.width), self.width - 1)
        physical_y = min(math.floor(y * self.height), self.height - 1)
        left, top, right, bottom = self.logical_box()
        logical_x = math.floor((self.left + physical_x) / self.scale_x)
        logical_y = math.floor((self.top + physical_y) / self.scale_y)
        # A fractional scale can put the last physical pixel past the last whole logical one.
        return min(max(logical_x, left), right), min(max(logical_y, top), bottom)

    def from_pixels(self, logical_x: float, logical_y: float) -> tuple[float, float]:
        """Return the normalised coordinates of the centre of a logical pixel (inverse of to_pixels)."""
        physical_x = (logical_x + 0.5) * self.scale_x - self.left
        physical_y = (logical_y + 0.5) * self.scale_y - self.top
        return physical_x / self.width, physical_y / self.height


def _pick_monitor(monitors: list[dict[str, Any]], index: int | None) -> dict[str, Any]:
    """Return mss's monitor `index` (1 is the first), or the primary one when index is None."""
    physical = monitors[1:]  # mss's entry 0 is the bounding box of all monitors
    if not physical:
        raise RuntimeError("no monitor found on this display")
    if index is None:
        return next((monitor for monitor in physical if monitor.get("is_primary")), physical[0])
    if not 1 <= index <= len(physical):
        raise ValueError(f"invalid --monitor {index}: this display has monitors 1..{len(physical)}")
    return physical[index - 1]


def detect_geometry(
    monitors: list[dict[str, Any]],
    logical_size: tuple[int, int],
    index: int | None = None,
    capture_size: tuple[int, int] | None = None,
) -> ScreenGeometry:
    """Build the geometry of one monitor from mss's monitor list and pyautogui.size().

    On X11 and Windows, mss reports monitors in physical pixels, and the HiDPI scale is the
    ratio of the whole desktop (mss entry 0) to the desktop size pyautogui reports. On macOS,
    mss reports monitors in points but grabs Retina pixels; a `capture_size` (the size of a real
    screenshot) that differs from the monitor size reveals that case, and the scale is then the
    ratio of the screenshot to the monitor.
    """
    monitor = _pick_monitor(monitors, index)
    width, height = monitor["width"], monitor["height"]
    if capture_size is not None and tuple(capture_size) != (width, height):
        scale_x, scale_y = capture_size[0] / width, capture_size[1] / height
        return ScreenGeometry(
            left=round(monitor["left"] * scale_x),
            top=round(monitor["top"] * scale_y),
            width=capture_size[0],
            height=capture_size[1],
            scale_x=scale_x,
            scale_y=scale_y,
        )
    desktop = monitors[0]
    logical_width, logical_height = logical_size
    # The offset stays in mss's desktop coordinates, which pyautogui shares (up to the scale);
    # on Windows a monitor left of the primary one has a negative offset.
    return ScreenGeometry(
        left=monitor["left"],
        top=monitor["top"],
        width=width,
        height=height,
        scale_x=desktop["width"] / logical_width,
        scale_y=desktop["height"] / logical_height,
    )


class ScreenCapture:
    """Screenshots of one monitor through a single reused mss instance.

    Opening mss connects to the display (and costs milliseconds), so one instance serves every
    step. Use it from the thread that created it: mss's X11 connection is not shared across
    threads.
    """

    def __init__(self, monitor: int | None = None) -> None:
        import mss

        # mss 10.2 renamed the factory mss.mss() to the class mss.MSS.
        factory = getattr(mss, "MSS", None) or mss.mss
        self._mss = factory()
        self.monitor = _pick_monitor(self._mss.monitors, monitor)
        self.monitor_index = monitor

    def geometry(self) -> ScreenGeometry:
        """Return this monitor's geometry, asking pyautogui for the logical desktop size."""
        import pyautogui  # connects to the display on import, so only when a display is in use

        return detect_geometry(
            self._mss.monitors, tuple(pyautogui.size()), self.monitor_index, capture_size=self.grab().size
        )

    def grab(self) -> Image.Image:
        """Capture the monitor as an RGB image in physical pixels."""
        shot = self._mss.grab(self.monitor)
        return Image.frombuffer("RGB", shot.size, shot.bgra, "raw", "BGRX", 0, 1)

    def close(self) -> None:
        self._mss.close()

    def __enter__(self) -> ScreenCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def preprocess_screenshot(
    image: Image.Image, size: tuple[int, int], fill: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """Resize `image` to fit in size=(H, W) keeping its aspect ratio, padding right and bottom.

    The content keeps the top-left corner, so a normalised point (x, y) of the screen is at
    (x * content_width, y * content_height) in the result.
    """
    target_height, target_width = size
    if target_height <= 0 or target_width <= 0:
        raise ValueError(f"invalid model input size (H, W) = {size}: both must be positive")
    scale = min(target_width / image.width, target_height / image.height)
    content_width = max(1, round(image.width * scale))
    content_height = max(1, round(image.height * scale))
    # reducing_gap first shrinks by an integer factor with a box filter, which is several
    # times faster than a full bilinear pass at large reductions and looks the same.
    resized = image.convert("RGB").resize(
        (content_width, content_height), Image.Resampling.BILINEAR, reducing_gap=2.0
    )
    if (content_width, content_height) == (target_width, target_height):
        return resized
    canvas = Image.new("RGB", (target_width, target_height), fill)
    canvas.paste(resized, (0, 0))
    return canvas


def benchmark_capture(
    steps: int = 100, size: tuple[int, int] = (448, 448), monitor: int | None = None
) -> dict[str, Any]:
    """Time capture plus preprocessing per step on the current display; return the figures in ms."""
    timings: list[float] = []
    with ScreenCapture(monitor) as capture:
        screen_size = capture.grab().size  # the first grab also warms up the X connection
        for _ in range(steps):
            start = time.perf_counter()
            preprocess_screenshot(capture.grab(), size)
            timings.append((time.perf_counter() - start) * 1000.0)
    return {
        "screen_size": screen_size,
        "model_size": size,
        "steps": steps,
        "median_ms": statistics.median(timings),
        "min_ms": min(timings),
        "max_ms": max(timings),
        "target_ms": BENCH_TARGET_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.screen", description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true", help="time capture plus preprocessing per step")
    parser.add_argument("--steps", type=int, default=100, help="number of timed steps")
    parser.add_argument("--monitor", type=int, default=None, help="mss monitor number (default: primary)")
    parser.add_argument("--height", type=int, default=448, help="model input height in pixels")
    parser.add_argument("--width", type=int, default=448, help="model input width in pixels")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 0

    from rich.console import Console

    from agent.executor import check_display

    check_display()
    figures = benchmark_capture(args.steps, (args.height, args.width), args.monitor)
    width, height = figures["screen_size"]
    console = Console(soft_wrap=True)
    console.print(
        f"capture+preprocess {width}x{height} -> {args.height}x{args.width}, {figures['steps']} steps: "
        f"median {figures['median_ms']:.2f} ms, min {figures['min_ms']:.2f} ms, max {figures['max_ms']:.2f} ms "
        f"(target < {BENCH_TARGET_MS:.0f} ms)"
    )
    if (width, height) != BENCH_SIZE:
        console.print(f"[yellow]note: the target is defined for a {BENCH_SIZE[0]}x{BENCH_SIZE[1]} screen[/]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
