"""Carry out actions on the real mouse and keyboard through pyautogui, with the safety checks.

Safety, in the order `Executor.execute` applies it:
1. every point is mapped to pixels and checked against the monitor, and every character of a
   `type` action is checked to be typeable, before anything moves;
2. a dry run logs what it would do and returns without importing pyautogui;
3. with `confirm`, the user answers y (do it), n (skip it) or q (stop the run);
4. pyautogui's fail-safe stays on: moving the mouse into a screen corner makes the next
   pyautogui call raise `pyautogui.FailSafeException`; `execute` raises it as
   `FailSafeTriggered`, which the agent loop turns into a clean stop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from agent.actions import (
    Action,
    Click,
    Done,
    DoubleClick,
    Drag,
    Key,
    Move,
    RightClick,
    Scroll,
    Type,
    Wait,
    format_action,
    keyboard_keys,
)
from agent.screen import ScreenGeometry

logger = logging.getLogger(__name__)

DEFAULT_PAUSE_SECONDS = 0.1  # pyautogui.PAUSE: lets the application process one event before the next
# pyautogui treats moves shorter than 0.1 s as instant; X11 applications often ignore an
# instant press-move-release, so a drag takes this long.
DRAG_SECONDS = 0.3
TYPE_INTERVAL_SECONDS = 0.01  # between typed characters, so slow widgets miss none

ConfirmAnswer = Literal["y", "n", "q"]
Confirm = Callable[[Action, str], ConfirmAnswer]

NO_DISPLAY_MESSAGE = "no X display: set DISPLAY or run under Xvfb"


class DisplayError(RuntimeError):
    """No usable X display for capture and input."""


class FailSafeTriggered(RuntimeError):
    """The mouse reached a screen corner, pyautogui's fail-safe; the run must stop."""


def check_display() -> None:
    """Raise DisplayError unless an X display is reachable (Linux only; other systems pass).

    mss and pyautogui need X11, so a Wayland-only session (WAYLAND_DISPLAY set, DISPLAY unset)
    fails here too, with a hint.
    """
    if not sys.platform.startswith("linux"):
        return
    name = os.environ.get("DISPLAY", "")
    if not name:
        if os.environ.get("WAYLAND_DISPLAY"):
            raise DisplayError(
                f"{NO_DISPLAY_MESSAGE} (this is a Wayland session without XWayland: "
                "pyautogui and mss need X11, so log in to an Xorg session or enable XWayland)"
            )
        raise DisplayError(NO_DISPLAY_MESSAGE)
    from Xlib import display as xdisplay
    from Xlib import error as xerror

    try:
        connection = xdisplay.Display(name)
    except xerror.XauthError as error:
        raise DisplayError(
            f"cannot open DISPLAY={name!r}: {error}; set XAUTHORITY to the display's authority file "
            "(an empty file works for an Xvfb started without access control)"
        ) from error
    except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as error:
        raise DisplayError(f"{NO_DISPLAY_MESSAGE} (cannot open DISPLAY={name!r}: {error})") from error
    connection.close()


@dataclass
class ExecutionResult:
    """What became of one action.

    status: executed, dry_run (logged only), skipped (n at the prompt), stopped (q at the
    prompt), or rejected (invalid for this screen, so nothing moved; `error` gives the reason).
    """

    status: Literal["executed", "dry_run", "skipped", "stopped", "rejected"]
    pixels: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None

    @property
    def executed(self) -> bool:
        return self.status == "executed"


def _points(action: Action) -> list[tuple[float, float]]:
    if isinstance(action, Drag):
        return [(action.x, action.y), (action.to_x, action.to_y)]
    if isinstance(action, (Click, DoubleClick, RightClick, Move, Scroll)):
        return [(action.x, action.y)]
    return []


def _untypeable(text: str) -> list[str]:
    """Return the characters of `text` that pyautogui.write cannot type (it skips them silently)."""
    keys = keyboard_keys()
    return sorted({char for char in text if char not in keys and not (char.isupper() and char.lower() in keys)})


class Executor:
    """Runs actions on one monitor; see the module docstring for the safety checks."""

    def __init__(
        self,
        geometry: ScreenGeometry,
        pause: float = DEFAULT_PAUSE_SECONDS,
        dry_run: bool = False,
        confirm: Confirm | None = None,
    ) -> None:
        if pause < 0:
            raise ValueError(f"invalid pause {pause}: must be >= 0 seconds")
        self.geometry = geometry
        self.pause = pause
        self.dry_run = dry_run
        self.confirm = confirm
        self._pyautogui = None
        if not dry_run:
            import pyautogui  # connects to the display on import, so dry runs never import it

            pyautogui.FAILSAFE = True
            pyautogui.PAUSE = pause
            self._pyautogui = pyautogui

    def check(self, action: Action) -> list[tuple[int, int]]:
        """Return the pixels the action touches; raise ValueError if it cannot run on this screen."""
        # NOTE: a point on a corner pixel is allowed, but it parks the mouse in pyautogui's
        # fail-safe corner, so the next action stops the run.
        pixels = [self.geometry.to_pixels(x, y) for x, y in _points(action)]
        if isinstance(action, Type):
            missing = _untypeable(action.text)
            if missing:
                raise ValueError(
                    f"pyautogui cannot type {''.join(missing)!r} (only keys in pyautogui.KEYBOARD_KEYS); "
                    "type ASCII text or use key() actions"
                )
        return pixels

    def execute(self, action: Action) -> ExecutionResult:
        """Check, confirm and perform one action; raise FailSafeTriggered on pyautogui's fail-safe."""
        text = format_action(action)
        try:
            pixels = self.check(action)
        except ValueError as error:
            logger.warning("rejected %s: %s", text, error)
            return ExecutionResult("rejected", error=str(error))

        if self.dry_run:
            logger.info("dry run: %s at pixels %s", text, pixels)
            return ExecutionResult("dry_run", pixels)
        if self.confirm is not None:
            answer = self.confirm(action, text)
            if answer == "n":
                logger.info("skipped %s", text)
                return ExecutionResult("skipped", pixels)
            if answer == "q":
                logger.info("stop requested before %s", text)
                return ExecutionResult("stopped", pixels)

        try:
            self._perform(action, pixels)
        except self._pyautogui.FailSafeException as error:
            raise FailSafeTriggered(
                f"pyautogui fail-safe triggered before {text}: the mouse is in a screen corner"
            ) from error
        logger.debug("executed %s at pixels %s", text, pixels)
        return ExecutionResult("executed", pixels)

    def _perform(self, action: Action, pixels: list[tuple[int, int]]) -> None:
        gui = self._pyautogui
        match action:
            case Click(button=button, clicks=clicks):
                (x, y), = pixels
                gui.click(x, y, clicks=clicks, button=button)
            case DoubleClick():
                (x, y), = pixels
                gui.doubleClick(x, y)
            case RightClick():
                (x, y), = pixels
                gui.rightClick(x, y)
            case Move():
                (x, y), = pixels
                gui.moveTo(x, y)
            case Drag():
                (x, y), (to_x, to_y) = pixels
                gui.moveTo(x, y)
                gui.dragTo(to_x, to_y, duration=DRAG_SECONDS, button="left")
            case Scroll(amount=amount, direction=direction):
                (x, y), = pixels
                # pyautogui's sign convention: positive is up (scroll) or right (hscroll).
                if direction in ("up", "down"):
                    gui.scroll(amount if direction == "up" else -amount, x=x, y=y)
                else:
                    gui.hscroll(amount if direction == "right" else -amount, x=x, y=y)
            case Type(text=text):
                gui.write(text, interval=TYPE_INTERVAL_SECONDS)
            case Key(keys=[key]):
                gui.press(key)
            case Key(keys=keys):
                gui.hotkey(*keys)
            case Wait(seconds=seconds):
                time.sleep(seconds)
            case Done():
                pass
