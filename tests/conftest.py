"""Shared fixtures: a real Xvfb display for every test that drives or captures a desktop."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

# One intra-op thread for torch in the tests and in the subprocesses they start. The tests share
# two cores with Xvfb and Chromium, and torch's default of one thread per core then spends most
# of its time waiting for a busy core (steps measured 12-30 times slower on a loaded machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

XVFB_SIZE = (1280, 800)
XVFB_START_TIMEOUT_SECONDS = 20  # Xvfb normally reports its display number within a second


@dataclass(frozen=True)
class XvfbDisplay:
    name: str  # the DISPLAY value, e.g. ":7"
    width: int
    height: int


@pytest.fixture(scope="session")
def xvfb_display(tmp_path_factory):
    """Start one Xvfb for the session, set DISPLAY to it, and stop it at the end.

    Xvfb picks a free display number itself (-displayfd), so parallel sessions never collide.
    pyautogui binds to DISPLAY when first imported, so every desktop test in the session uses
    this one display. Skips when the Xvfb binary is missing.
    """
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb not found on PATH; install it (Debian/Ubuntu: apt-get install xvfb) to run desktop tests")
    width, height = XVFB_SIZE
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [binary, "-displayfd", str(write_end), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = _read_display_number(read_end, process)
    finally:
        os.close(read_end)
    saved = {key: os.environ.get(key) for key in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")}
    os.environ["DISPLAY"] = f":{number}"
    os.environ.pop("WAYLAND_DISPLAY", None)
    # python-xlib (used by pyautogui) fails when the Xauthority file is missing, even for an
    # Xvfb without access control; an empty file is enough.
    authority = tmp_path_factory.mktemp("xvfb") / "Xauthority"
    authority.touch()
    os.environ["XAUTHORITY"] = str(authority)
    try:
        yield XvfbDisplay(f":{number}", width, height)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_display_number(fd: int, process: subprocess.Popen) -> int:
    import select

    text = b""
    while not text.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], XVFB_START_TIMEOUT_SECONDS)
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            process.kill()
            process.wait()
            raise RuntimeError(f"Xvfb did not report a display number within {XVFB_START_TIMEOUT_SECONDS} s")
        text += chunk
    return int(text.strip())
