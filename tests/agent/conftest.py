"""Fixtures for the agent tests: the Tk test window on the session's Xvfb display."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

TK_APP = Path(__file__).with_name("tk_app.py")
SETTLE_SECONDS = 0.3  # time for X events sent by pyautogui to reach Tk before reading its state


class TkWindow:
    """The test window subprocess; `state()` returns its widgets' values and rectangles."""

    def __init__(self, display: str, left: int = 100, top: int = 80) -> None:
        import os

        env = {**os.environ, "DISPLAY": display}
        self.process = subprocess.Popen(
            [sys.executable, str(TK_APP), "--left", str(left), "--top", str(top)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self.process.stdout.readline()
        if not ready:
            raise RuntimeError(f"the Tk test window exited with code {self.process.wait()}")

    def state(self, settle: float = SETTLE_SECONDS) -> dict:
        time.sleep(settle)
        self.process.stdin.write("state\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def center(self, widget: str) -> tuple[int, int]:
        """Return the screen pixel at the centre of a widget."""
        left, top, width, height = self.state(settle=0)["widgets"][widget]
        return left + width // 2, top + height // 2

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def tk_window(xvfb_display):
    window = TkWindow(xvfb_display.name)
    try:
        yield window
    finally:
        window.close()


@pytest.fixture
def start_tk_window(xvfb_display):
    """Return a function that opens a Tk test window at (left, top); all are closed at the end."""
    windows: list[TkWindow] = []

    def start(left: int = 100, top: int = 80) -> TkWindow:
        windows.append(TkWindow(xvfb_display.name, left, top))
        return windows[-1]

    try:
        yield start
    finally:
        for window in windows:
            window.close()


@pytest.fixture
def geometry(xvfb_display):
    from agent.screen import ScreenCapture

    with ScreenCapture() as capture:
        return capture.geometry()
