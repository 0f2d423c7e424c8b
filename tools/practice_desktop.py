"""Lifecycle of the practice desktop: one Xvfb display with one Chromium window on it.

`start_desktop` launches Xvfb and a non-headless Chromium (app mode, no toolbar, fixed position,
size and device scale) as detached processes. It writes their ids to a state file in the runtime
folder, and `stop_desktop` ends them. Later processes (`holdfast practice run`, the tests) read the
state file and attach to the browser through its DevTools port with chromedriver.

Every process the desktop starts carries `TAG_VARIABLE=<tag>` in its environment, and Chromium's
children inherit it. Chromium's crash handler leaves the browser's process group, so the tag,
not the group, is how `stop_desktop` finds everything, including leftovers of a crashed start.

Screen layout: MiniWoB++ draws its task in the top-left 160x210 CSS pixels of the page. With a
device scale factor of 2 the task covers 320x420 physical pixels, and the Xvfb screen is exactly
that size, so every captured pixel belongs to the task. The reward display that MiniWoB draws
right of the task (from x = 165) stays inside the window but outside the screen.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

RUNTIME_DIR_VARIABLE = "HOLDFAST_PRACTICE_DIR"  # overrides the runtime folder (tests use it)
TAG_VARIABLE = "HOLDFAST_PRACTICE_TAG"
STATE_FILE = "desktop.json"
LOCK_FILE = "desktop.lock"

# MiniWoB++ task area in CSS pixels (miniwob.constants.TASK_WIDTH/TASK_HEIGHT); the reward display
# starts at x = 165 and is 160 wide, so the window is 330 CSS pixels wide to hold both.
TASK_WIDTH_CSS = 160
TASK_HEIGHT_CSS = 210
WINDOW_WIDTH_CSS = 330
DEFAULT_SCALE = 2  # integer, so text stays crisp and one CSS pixel is exactly scale x scale pixels

XVFB_BINARY = "Xvfb"
XAUTH_FAMILY_LOCAL = 256  # the authority file's family code for a display on this host
CHROMIUM_BINARY = "/usr/bin/chromium"
CHROMEDRIVER_BINARY = "/usr/bin/chromedriver"

XVFB_START_TIMEOUT_SECONDS = 20.0  # Xvfb reports its display within a second when healthy
BROWSER_START_TIMEOUT_SECONDS = 60.0  # Chromium's first start on 2 busy cores takes a few seconds
STOP_TIMEOUT_SECONDS = 10.0  # after SIGTERM, before SIGKILL
POLL_SECONDS = 0.1

# Flags for a root user on a machine without network and without a GPU. --test-type hides the
# "unsupported command-line flag" bar that --no-sandbox would otherwise add above the page, which
# would shift the page down by the bar's height.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--test-type",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-translate",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--password-store=basic",
    "--window-position=0,0",
)


class DesktopError(RuntimeError):
    """The practice desktop cannot be started, found or stopped; the message states what to do."""


@dataclass(frozen=True)
class DesktopState:
    """The contents of the state file: what `start_desktop` started and how to reach it."""

    display: str  # DISPLAY value, e.g. ":3"
    xauthority: str  # authority file with one unchecked cookie; python-xlib needs one even without access control
    debugger_address: str  # host:port of Chromium's DevTools endpoint, for chromedriver
    xvfb_pid: int
    chromium_pid: int
    tag: str  # value of TAG_VARIABLE in the environment of every started process
    user_data_dir: str
    scale: int  # device scale factor: physical pixels per CSS pixel
    screen_width: int
    screen_height: int
    started_at: float  # UNIX time

    def environment(self) -> dict[str, str]:
        """Return the variables a client needs to capture and drive this desktop."""
        return {"DISPLAY": self.display, "XAUTHORITY": self.xauthority}


def runtime_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Return (and create, mode 0700) the folder that contains the state file and logs.

    Order: the argument, $HOLDFAST_PRACTICE_DIR, $XDG_RUNTIME_DIR/holdfast-practice, then
    /tmp/holdfast-practice-<uid>.
    """
    if path is None:
        path = os.environ.get(RUNTIME_DIR_VARIABLE) or None
    if path is None and os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "holdfast-practice"
    if path is None:
        path = Path(tempfile.gettempdir()) / f"holdfast-practice-{os.getuid()}"
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def screen_size(scale: int) -> tuple[int, int]:
    """Return the Xvfb screen (width, height) in pixels that the task area fills at `scale`."""
    return TASK_WIDTH_CSS * scale, TASK_HEIGHT_CSS * scale


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Serialises start and stop, so two concurrent `practice start` calls start one browser.
    with open(folder / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(folder: Path) -> DesktopState | None:
    """Return the saved state, or None when there is none (a corrupt file counts as none)."""
    path = folder / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DesktopState(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        logger.warning("ignoring invalid state file %s: %s", path, error)
        return None


def _write_state(folder: Path, state: DesktopState) -> None:
    path = folder / STATE_FILE
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------
# Processes


def _process_running(pid: int) -> bool:
    """Return True when `pid` exists and is not a zombie (a zombie has already exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in brackets and may contain spaces.
    return stat[stat.rfind(")") + 2] not in "ZX"


def _process_tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environment = handle.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = f"{TAG_VARIABLE}=".encode()
    for entry in environment:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def _process_group(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command: state, ppid, pgrp.
    return int(stat[stat.rfind(")") + 2 :].split()[2])


def _process_program(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def desktop_processes(state: DesktopState) -> list[int]:
    """Return the ids of the running processes that belong to the desktop of `state`.

    A process belongs when its environment carries the desktop's tag, or when it is a Chromium
    or Xvfb program in the process group of the started browser or Xvfb. Chromium starts its
    zygotes with a cleared environment, so its renderers are found by their group. Its crash
    handler leaves the group but keeps the environment.
    """
    groups = {pid for pid in (state.xvfb_pid, state.chromium_pid) if pid > 0}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _process_tag(pid) == state.tag:
            belongs = True
        else:
            program = Path(_process_program(pid)).name
            belongs = _process_group(pid) in groups and (program.startswith("chrom") or program == XVFB_BINARY)
        if belongs and _process_running(pid):
            pids.append(pid)
    return sorted(pids)


def _reap(pid: int) -> None:
    # Only a process started by this Python process can be reaped here; others are init's job.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_all(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


def _end_processes(state: DesktopState) -> int:
    """Terminate the desktop's processes, then kill what survives; return how many there were."""
    pids = desktop_processes(state)
    if not pids:
        return 0
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    remaining = pids
    while remaining and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        for pid in remaining:
            _reap(pid)
        remaining = [pid for pid in remaining if _process_running(pid)]
    if remaining:
        logger.warning("processes %s ignored SIGTERM for %.0f s; killing them", remaining, STOP_TIMEOUT_SECONDS)
        _signal_all(remaining, signal.SIGKILL)
        for pid in remaining:
            _reap(pid)
    # Chromium may have forked a helper while the others were ending.
    late = desktop_processes(state)
    if late:
        _signal_all(late, signal.SIGKILL)
        for pid in late:
            _reap(pid)
    return len(pids)


def state_is_healthy(state: DesktopState) -> bool:
    """Return True when Xvfb and Chromium of `state` run and the DevTools endpoint responds."""
    for pid in (state.xvfb_pid, state.chromium_pid):
        if not _process_running(pid) or _process_tag(pid) != state.tag:
            return False
    try:
        with urllib.request.urlopen(f"http://{state.debugger_address}/json/version", timeout=2) as reply:
            reply.read()
    except (urllib.error.URLError, OSError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Start and stop


def start_desktop(
    folder: str | os.PathLike[str] | None = None, scale: int = DEFAULT_SCALE
) -> tuple[DesktopState, bool]:
    """Start Xvfb and Chromium unless a healthy desktop is already running.

    Returns (state, started): started is False when an existing desktop was reused. A stale
    state (a process died, the endpoint is gone) is cleaned up and a fresh desktop started.
    """
    if not 1 <= scale <= 4 or int(scale) != scale:
        raise ValueError(f"invalid device scale {scale!r}: use an integer from 1 to 4")
    _check_binaries()
    folder = runtime_dir(folder)
    with _locked(folder):
        state = read_state(folder)
        if state is not None:
            if state_is_healthy(state):
                logger.info("practice desktop already running on %s (Chromium pid %d)", state.display, state.chromium_pid)
                return state, False
            logger.warning("cleaning up a stale practice desktop from %s", folder / STATE_FILE)
            _clean_up(folder, state)
        state = _launch(folder, scale)
        _write_state(folder, state)
        return state, True


def stop_desktop(folder: str | os.PathLike[str] | None = None) -> bool:
    """Stop what `start_desktop` started; return False when nothing was running."""
    folder = runtime_dir(folder)
    with _locked(folder):
        state = read_state(folder)
        if state is None:
            return False
        ended = _clean_up(folder, state)
        logger.info("practice desktop on %s stopped (%d processes)", state.display, ended)
        return ended > 0


def _clean_up(folder: Path, state: DesktopState) -> int:
    ended = _end_processes(state)
    shutil.rmtree(state.user_data_dir, ignore_errors=True)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return ended


def _check_binaries() -> None:
    missing = [name for name in (XVFB_BINARY, CHROMIUM_BINARY, CHROMEDRIVER_BINARY) if shutil.which(name) is None]
    if missing:
        raise DesktopError(
            f"{', '.join(missing)} not found; install them (Debian: apt-get install xvfb chromium chromium-driver)"
        )


def _launch(folder: Path, scale: int) -> DesktopState:
    width, height = screen_size(scale)
    state = DesktopState(
        display="",
        xauthority=str(folder / "Xauthority"),
        debugger_address="",
        xvfb_pid=0,
        chromium_pid=0,
        tag=uuid.uuid4().hex,
        user_data_dir=tempfile.mkdtemp(prefix="chromium-", dir=folder),
        scale=scale,
        screen_width=width,
        screen_height=height,
        started_at=time.time(),
    )
    environment = {**os.environ, TAG_VARIABLE: state.tag}
    try:
        xvfb_pid, display = _start_xvfb(folder, environment, width, height)
        state = replace(state, xvfb_pid=xvfb_pid, display=display)
        _write_xauthority(Path(state.xauthority), display)
        browser_environment = {**environment, **state.environment()}
        browser_environment.pop("WAYLAND_DISPLAY", None)
        chromium_pid, port = _start_chromium(folder, browser_environment, state.user_data_dir, scale)
        state = replace(state, chromium_pid=chromium_pid, debugger_address=f"127.0.0.1:{port}")
    except BaseException:
        _clean_up(folder, state)
        raise
    logger.info("practice desktop started on %s: %dx%d screen, scale %d", state.display, width, height, scale)
    return state


def _write_xauthority(path: Path, display: str) -> None:
    """Write one MIT-MAGIC-COOKIE-1 entry for `display` to a new authority file.

    Xvfb runs without `-auth`, so it accepts local clients whatever cookie they send. The
    entry is there because python-xlib prints a warning to stdout when the file has none,
    which would break the JSON that `--json` commands print there.
    """
    def field(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    number = display.lstrip(":").split(".")[0].encode()
    entry = struct.pack(">H", XAUTH_FAMILY_LOCAL) + field(socket.gethostname().encode()) + field(number)
    entry += field(b"MIT-MAGIC-COOKIE-1") + field(secrets.token_bytes(16))
    path.write_bytes(entry)


def _start_xvfb(folder: Path, environment: dict[str, str], width: int, height: int) -> tuple[int, str]:
    read_end, write_end = os.pipe()
    with open(folder / "xvfb.log", "wb") as log:
        # Xvfb picks a free display number itself and writes it to the pipe once it accepts
        # connections. Its own session keeps it alive when the starting command exits.
        process = subprocess.Popen(
            [XVFB_BINARY, "-displayfd", str(write_end), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    os.close(write_end)
    try:
        text = b""
        deadline = time.monotonic() + XVFB_START_TIMEOUT_SECONDS
        while not text.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 64) if ready else b""
            if not chunk:
                raise DesktopError(
                    f"Xvfb did not report a display within {XVFB_START_TIMEOUT_SECONDS:.0f} s; see {folder / 'xvfb.log'}"
                )
            text += chunk
    finally:
        os.close(read_end)
    return process.pid, f":{int(text.strip())}"


def _start_chromium(folder: Path, environment: dict[str, str], user_data_dir: str, scale: int) -> tuple[int, int]:
    # Window size is in device-independent (CSS) pixels. Port 0 lets Chromium pick a free port
    # and write it to DevToolsActivePort, which avoids racing other programs for a port.
    command = [
        CHROMIUM_BINARY,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={user_data_dir}",
        f"--force-device-scale-factor={scale}",
        f"--window-size={WINDOW_WIDTH_CSS},{TASK_HEIGHT_CSS}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--app=data:text/html,<title>holdfast practice</title>",
    ]
    with open(folder / "chromium.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    port_file = Path(user_data_dir) / "DevToolsActivePort"
    deadline = time.monotonic() + BROWSER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DesktopError(f"Chromium exited with code {process.returncode} at start; see {folder / 'chromium.log'}")
        if port_file.is_file():
            lines = port_file.read_text(encoding="utf-8").split("\n")
            if lines and lines[0].strip().isdigit():
                return process.pid, int(lines[0])
        time.sleep(POLL_SECONDS)
    raise DesktopError(
        f"Chromium opened no DevTools port within {BROWSER_START_TIMEOUT_SECONDS:.0f} s; see {folder / 'chromium.log'}"
    )
