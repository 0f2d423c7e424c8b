"""MiniWoB++ episodes on the practice desktop: seeding, instruction, reward, DOM and calibration.

The browser belongs to the desktop (`tools.practice_desktop`). This module attaches chromedriver
to it through the DevTools port and drives episodes through the `miniwob` package's own
`SeleniumInstance` (seeding with `Math.seedrandom`, `core.startEpisodeReal`, reading
`WOB_REWARD_GLOBAL`, `WOB_RAW_REWARD_GLOBAL` and `WOB_DONE_GLOBAL`). Selenium only starts episodes
and reads state; every action reaches the page as real X11 input.

When an episode ends, MiniWoB shows its START cover at once, and a click on it would start a new
episode with an unseeded problem. Callers must therefore check `status().done` after every
action and send no more input once it is true.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from miniwob.dom import DOMElement
from miniwob.fields import Fields, get_field_extractor
from miniwob.selenium_instance import HTML_DIR, SeleniumInstance
from PIL import Image

from tools.practice_desktop import CHROMEDRIVER_BINARY, TASK_HEIGHT_CSS, TASK_WIDTH_CSS, DesktopState

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

    from agent.screen import ScreenGeometry

logger = logging.getLogger(__name__)

# MiniWoB's default limit is 10 s (15 s on some tasks), which real input plus a screenshot and
# a model call per step can exceed. The raw reward ignores time; the time-scaled reward is
# scaled by this longer limit, so it is not comparable with published scaled rewards.
DEFAULT_EPISODE_SECONDS = 60.0
PAGE_LOAD_TIMEOUT_SECONDS = 10.0
# Time an X11 event takes to reach the page's handlers after pyautogui returns. The end check
# after an action waits up to this long for done to turn true. In the expert runs of
# docs/practice.md a one-click episode took about 70 ms from screenshot to done, so this leaves
# a wide margin on a loaded machine.
INPUT_SETTLE_SECONDS = 0.25
POLL_SECONDS = 0.02

# Calibration markers: CSS pixel squares in two colours that MiniWoB pages do not use.
MARKER_SIZE_CSS = 8
MARKERS = (
    ("#ff00ff", (255, 0, 255), (8, 56)),
    ("#00ffff", (0, 255, 255), (144, 194)),
)
MARKER_COLOUR_TOLERANCE = 24  # per channel, for colour management and anti-aliasing
CALIBRATION_TIMEOUT_SECONDS = 5.0
POINTER_TOLERANCE_CSS = 1.0  # a pointer check may be off by rounding to whole pixels


class PracticeError(RuntimeError):
    """An episode cannot be started, read or calibrated; the message names the task and value."""


@dataclass(frozen=True)
class EpisodeStatus:
    """The episode's end state as MiniWoB reports it (rewards are 0 until done)."""

    done: bool
    reward: float  # WOB_REWARD_GLOBAL: raw reward scaled down by the time taken
    raw_reward: float  # WOB_RAW_REWARD_GLOBAL: -1..1, positive means the task was solved
    reason: Any = None

    @property
    def success(self) -> bool:
        """A solved task, as in the published MiniWoB++ results: done with a positive raw reward."""
        return self.done and self.raw_reward > 0


@dataclass(frozen=True)
class PageMapping:
    """Affine map from page (CSS) pixels to screenshot pixels, measured by `calibrate`.

    screenshot_x = offset_x + scale_x * page_x, and the same for y.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_screenshot(self, page_x: float, page_y: float) -> tuple[float, float]:
        return self.offset_x + self.scale_x * page_x, self.offset_y + self.scale_y * page_y

    def to_page(self, screenshot_x: float, screenshot_y: float) -> tuple[float, float]:
        return (screenshot_x - self.offset_x) / self.scale_x, (screenshot_y - self.offset_y) / self.scale_y

    def to_normalised(self, geometry: ScreenGeometry, page_x: float, page_y: float) -> tuple[float, float]:
        """Return the action coordinates (0..1 of the screen) that hit page point (page_x, page_y).

        The point is snapped to the centre of its screenshot pixel, so rounding the coordinates
        to the action grid keeps it inside that pixel.
        """
        shot_x, shot_y = self.to_screenshot(page_x, page_y)
        if not (0 <= shot_x < geometry.width and 0 <= shot_y < geometry.height):
            raise PracticeError(
                f"page point ({page_x:.1f}, {page_y:.1f}) maps to screenshot pixel ({shot_x:.0f}, {shot_y:.0f}), "
                f"outside the {geometry.width}x{geometry.height} screen"
            )
        return (math.floor(shot_x) + 0.5) / geometry.width, (math.floor(shot_y) + 0.5) / geometry.height


def connect_browser(state: DesktopState) -> WebDriver:
    """Attach a new chromedriver session to the desktop's running Chromium."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.add_experimental_option("debuggerAddress", state.debugger_address)
    try:
        # A session of its own, like Xvfb's and Chromium's: `timeout` signals its whole process
        # group, and a chromedriver killed with it would fail the cleanup that ends the episode.
        service = Service(CHROMEDRIVER_BINARY, popen_kw={"start_new_session": True})
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as error:
        raise PracticeError(
            f"cannot attach chromedriver to Chromium at {state.debugger_address}: {error.msg}; "
            "restart the desktop with `holdfast practice stop` and `holdfast practice start`"
        ) from error
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
    return driver


# Tasks kept in this project, in MiniWoB++'s page format (one HTML file per task).
PROJECT_TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def project_task_names() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in PROJECT_TASKS_DIR.glob("*.html")))


def _project_task_base_url() -> str:
    """Return the file:// folder URL that serves this project's task pages.

    The pages load MiniWoB++'s scripts by relative paths (`../core/core.js`), so they are staged
    in a folder next to links to the package's `core` and `common` folders.
    """
    root = Path(tempfile.gettempdir()) / f"holdfast-tasks-{os.getuid()}"
    pages = root / "holdfast"
    pages.mkdir(parents=True, exist_ok=True)
    for name in ("core", "common"):
        link = root / name
        if not link.exists():
            link.symlink_to(HTML_DIR / name, target_is_directory=True)
    for page in PROJECT_TASKS_DIR.glob("*.html"):
        shutil.copyfile(page, pages / page.name)
    return pages.as_uri() + "/"


class _AttachedInstance(SeleniumInstance):
    """The package's Selenium instance for one task, using a driver it did not start."""

    def __init__(self, task: str, driver: WebDriver) -> None:
        if task in project_task_names():
            # Project tasks have no field extractor in the package; their instructions carry no fields.
            super().__init__(
                index=0, subdomain=task, headless=False, base_url=_project_task_base_url(),
                field_extractor=lambda utterance: [],
            )
        else:
            super().__init__(index=0, subdomain=task, headless=False)
        self.driver = driver
        # Screenshots come from the X display through mss, never from Selenium.
        self.record_screenshots = False

    def create_driver(self) -> None:
        raise PracticeError("this instance attaches to the practice desktop's browser and starts none")

    def open(self) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        self.driver.get(self.url)
        try:
            WebDriverWait(self.driver, PAGE_LOAD_TIMEOUT_SECONDS).until(
                expected_conditions.presence_of_element_located((By.ID, self.SYNC_SCREEN_ID))
            )
        except TimeoutException as error:
            raise PracticeError(f"MiniWoB page {self.url} did not load within {PAGE_LOAD_TIMEOUT_SECONDS:.0f} s") from error


class PracticeEnv:
    """Seeded MiniWoB++ episodes in the practice desktop's browser."""

    def __init__(self, state: DesktopState, episode_seconds: float = DEFAULT_EPISODE_SECONDS) -> None:
        if episode_seconds <= 0:
            raise ValueError(f"invalid episode time {episode_seconds} s: must be positive")
        self.state = state
        self.episode_seconds = episode_seconds
        self.driver = connect_browser(state)
        self.task: str | None = None
        self.seed: int | None = None
        self._instance: _AttachedInstance | None = None
        self._fields: Fields = []

    # -- episodes ------------------------------------------------------------------------------

    def open_task(self, task: str) -> None:
        """Load the task's page unless it is already open."""
        if self.task == task and self._instance is not None:
            return
        instance = _AttachedInstance(task, self.driver)
        try:
            instance.open()
        except Exception:
            self.task, self._instance = None, None
            raise
        self.task, self._instance = task, instance

    def reset(self, task: str, seed: int) -> str:
        """Start the task's episode for `seed` and return its instruction."""
        self.open_task(task)
        instance = self._require_instance()
        instance.force_stop()
        self.driver.execute_script(f"core.EPISODE_MAX_TIME = {int(self.episode_seconds * 1000)};")
        instance.begin_task(seed=seed)
        self.seed = seed
        instruction = self.instruction()
        try:
            self._fields = list(get_field_extractor(task)(instruction))
        except (KeyError, ValueError) as error:
            logger.debug("no task fields for %s: %s", task, error)
            self._fields = []
        self.wait_for_frame()
        logger.debug("episode %s seed %d: %s", task, seed, instruction)
        return instruction

    def instruction(self) -> str:
        response = self.driver.execute_script("return core.getUtterance();")
        return response["utterance"] if isinstance(response, dict) else str(response)

    @property
    def fields(self) -> Fields:
        """The task fields that the package's field extractor read from the instruction."""
        return self._fields

    def dom(self) -> DOMElement:
        """Return the page's element tree (core.getDOMInfo); refs stay valid for this episode."""
        return DOMElement(self.driver.execute_script("return core.getDOMInfo();"))

    def status(self) -> EpisodeStatus:
        metadata = self._require_instance().get_metadata()
        return EpisodeStatus(
            done=bool(metadata["done"]),
            reward=float(metadata["env_reward"] or 0.0),
            raw_reward=float(metadata["raw_reward"] or 0.0),
            reason=metadata.get("reason"),
        )

    def end_episode(self) -> EpisodeStatus:
        """End a running episode with reward 0 (MiniWoB's force stop); return the final status."""
        status = self.status()
        if not status.done:
            self._require_instance().force_stop()
            status = self.status()
        return status

    def wait_for_input(self, timeout: float = INPUT_SETTLE_SECONDS) -> EpisodeStatus:
        """Wait until the last input has reached the page: done, or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while not status.done and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            status = self.status()
        if not status.done:
            self.wait_for_frame()
        return status

    def wait_for_frame(self) -> None:
        """Return after the browser has painted the current DOM (two animation frames)."""
        self.driver.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "requestAnimationFrame(function () { requestAnimationFrame(function () { done(true); }); });"
        )

    def clickable_point(self, element: DOMElement) -> tuple[float, float] | None:
        """Return a page point inside the task area where a click hits `element`, or None.

        The centre comes first. When another element covers it, the nearest uncovered point of a
        grid is used, because click-test-2 places its two buttons at random and they may overlap.
        """
        point = self.driver.execute_script(
            """
            var element = core.previousDOMInfo[arguments[0]];
            if (!element) return null;
            var r = element.getBoundingClientRect();
            var left = Math.max(r.left + 1, 0), right = Math.min(r.right - 1, arguments[1] - 1);
            var top = Math.max(r.top + 1, 0), bottom = Math.min(r.bottom - 1, arguments[2] - 1);
            if (right < left || bottom < top) return null;
            var cx = (left + right) / 2, cy = (top + bottom) / 2, points = [[cx, cy]];
            for (var i = 0; i <= 8; i++) for (var j = 0; j <= 8; j++)
              points.push([left + (right - left) * i / 8, top + (bottom - top) * j / 8]);
            points.sort(function (a, b) {
              return Math.hypot(a[0] - cx, a[1] - cy) - Math.hypot(b[0] - cx, b[1] - cy);
            });
            for (var k = 0; k < points.length; k++) {
              var hit = document.elementFromPoint(points[k][0], points[k][1]);
              if (hit && (hit === element || element.contains(hit))) return points[k];
            }
            return null;
            """,
            element.ref,
            TASK_WIDTH_CSS,
            TASK_HEIGHT_CSS,
        )
        return None if point is None else (float(point[0]), float(point[1]))

    # -- calibration ---------------------------------------------------------------------------

    def calibrate(
        self, grab: Callable[[], Image.Image], move_pointer: Callable[[float, float], None] | None = None
    ) -> PageMapping:
        """Measure the page-to-screenshot mapping from markers drawn on the page.

        Two coloured squares are placed at known page positions above everything else; the
        mapping follows from where they appear in a real screenshot. With `move_pointer` (a
        function that moves the real pointer to a page point through the mapping), the pointer
        is also moved onto each marker and the page's mousemove position is checked, so input
        and screenshots are known to agree.
        """
        if self._instance is None:
            raise PracticeError("open a task before calibrating: the markers need a MiniWoB page")
        self.driver.execute_script(_ADD_MARKERS_SCRIPT, [[colour, left, top] for colour, _, (left, top) in MARKERS], MARKER_SIZE_CSS)
        try:
            boxes = self._find_markers(grab)
        finally:
            self.driver.execute_script("document.querySelectorAll('.holdfast-marker').forEach(function (m) { m.remove(); });")
        (first_box, second_box) = boxes
        (_, _, (first_x, first_y)), (_, _, (second_x, second_y)) = MARKERS
        scale_x = (second_box[0] - first_box[0]) / (second_x - first_x)
        scale_y = (second_box[1] - first_box[1]) / (second_y - first_y)
        mapping = PageMapping(scale_x, scale_y, first_box[0] - scale_x * first_x, first_box[1] - scale_y * first_y)
        for box in boxes:
            width, height = box[2] - box[0], box[3] - box[1]
            if abs(width - MARKER_SIZE_CSS * scale_x) > 2 or abs(height - MARKER_SIZE_CSS * scale_y) > 2:
                raise PracticeError(f"calibration marker measured {width}x{height} pixels, inconsistent with {mapping}")
        logger.info("calibrated page-to-screen mapping: %s", mapping)
        if move_pointer is not None:
            self._check_pointer(mapping, move_pointer)
        return mapping

    def _find_markers(self, grab: Callable[[], Image.Image]) -> list[tuple[int, int, int, int]]:
        deadline = time.monotonic() + CALIBRATION_TIMEOUT_SECONDS
        while True:
            self.wait_for_frame()
            pixels = np.asarray(grab().convert("RGB"), dtype=np.int16)
            boxes = [_colour_box(pixels, rgb) for _, rgb, _ in MARKERS]
            if all(box is not None for box in boxes):
                return boxes  # type: ignore[return-value]
            if time.monotonic() > deadline:
                missing = [colour for (colour, _, _), box in zip(MARKERS, boxes) if box is None]
                raise PracticeError(
                    f"calibration markers {missing} not found in a {pixels.shape[1]}x{pixels.shape[0]} screenshot "
                    f"of {self.state.display}; is the browser window on this display and unobstructed?"
                )
            time.sleep(POLL_SECONDS)

    def _check_pointer(self, mapping: PageMapping, move_pointer: Callable[[float, float], None]) -> None:
        self.driver.execute_script(
            "window.holdfastPointer = null;"
            "document.addEventListener('mousemove', function (e) { window.holdfastPointer = [e.clientX, e.clientY]; }, true);"
        )
        for _, _, (left, top) in MARKERS:
            target = (left + MARKER_SIZE_CSS / 2, top + MARKER_SIZE_CSS / 2)
            move_pointer(*target)
            seen = None
            deadline = time.monotonic() + INPUT_SETTLE_SECONDS * 4
            while time.monotonic() < deadline:
                seen = self.driver.execute_script("return window.holdfastPointer;")
                if seen is not None and math.dist(seen, target) <= POINTER_TOLERANCE_CSS:
                    break
                time.sleep(POLL_SECONDS)
            if seen is None or math.dist(seen, target) > POINTER_TOLERANCE_CSS:
                raise PracticeError(
                    f"pointer moved to page point {target} arrived at {seen}; mapping {mapping} does not match the input"
                )
        logger.info("pointer check passed at %d points", len(MARKERS))

    def close(self) -> None:
        """Detach chromedriver; the browser keeps running for the next client."""
        # quit() would end the session the desktop's other clients may still use; stopping the
        # chromedriver process is enough to release it.
        self.driver.service.stop()

    def _require_instance(self) -> _AttachedInstance:
        if self._instance is None:
            raise PracticeError("no task is open; call reset(task, seed) first")
        return self._instance

    def __enter__(self) -> PracticeEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_ADD_MARKERS_SCRIPT = """
var size = arguments[1];
arguments[0].forEach(function (m) {
  var div = document.createElement('div');
  div.className = 'holdfast-marker';
  div.style.cssText = 'position:fixed;z-index:2147483647;pointer-events:none;left:' + m[1] + 'px;top:' + m[2] +
    'px;width:' + size + 'px;height:' + size + 'px;background:' + m[0] + ';';
  document.body.appendChild(div);
});
"""


def _colour_box(pixels: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Return (left, top, right, bottom) of the pixels within tolerance of `rgb`, right/bottom exclusive."""
    mask = np.all(np.abs(pixels - np.array(rgb, dtype=np.int16)) <= MARKER_COLOUR_TOLERANCE, axis=2)
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1
