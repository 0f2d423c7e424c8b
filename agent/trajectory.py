"""The one on-disk format of a recorded trajectory, its writer and its reader.

A trajectory is a folder:

    task.json      TaskInfo: instruction, screen size, model, start time, code version, outcome
    steps.jsonl    one Step per line, appended (and fsynced) as the run goes
    step_0000.png  the screenshot of step 0 exactly as the policy saw it, one per step

The recorder writes each screenshot before its step line and rewrites task.json through a
temporary file and `os.replace`, so a run killed at any point leaves a folder that
`load_trajectory` accepts: every step line refers to a complete PNG, and at worst the last
line is cut short, which the reader drops with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.actions import Action

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TASK_FILE = "task.json"
STEPS_FILE = "steps.jsonl"
# zlib's fastest level keeps the per-step write short. PNG stays lossless at any level, which
# the pixel comparison of replay needs.
PNG_COMPRESS_LEVEL = 1

# Values of TaskInfo.status written by the agent loop; other writers may add their own.
STATUS_RUNNING = "running"
STATUS_SUCCESS = "success"  # the policy returned done(success)
STATUS_FAILURE = "failure"  # the policy returned done(failure)
STATUS_MAX_STEPS = "max_steps"
STATUS_UNPARSEABLE = "unparseable"  # too many unparseable actions in a row
STATUS_INTERRUPTED = "interrupted"  # Ctrl-C, pyautogui's fail-safe or a q at the confirm prompt
STATUS_ERROR = "error"
# The statuses above that mark a failed episode. None and STATUS_RUNNING (a recorder closed
# without finish, as in hand-made data) leave the outcome unknown, so they are not in it.
UNSUCCESSFUL_STATUSES = frozenset({STATUS_FAILURE, STATUS_MAX_STEPS, STATUS_UNPARSEABLE, STATUS_INTERRUPTED, STATUS_ERROR})


class TrajectoryError(ValueError):
    """A trajectory folder that cannot be read; the message names the file and line."""


class TaskInfo(BaseModel):
    """The contents of task.json."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    instruction: str
    screen_width: int = Field(gt=0, description="captured screenshot width in pixels")
    screen_height: int = Field(gt=0, description="captured screenshot height in pixels")
    model: str = Field(description="preset name or checkpoint path of the policy")
    start_time: str = Field(description="ISO 8601 time the run started")
    code_version: str
    end_time: Optional[str] = None
    status: Optional[str] = Field(default=None, description="how the run ended, e.g. 'success'")
    answer: Optional[str] = Field(default=None, description="the answer given with done(...)")
    # Fields filled by the practice desktop (MiniWoB++ tasks).
    task_name: Optional[str] = None
    seed: Optional[int] = None
    reward: Optional[float] = None
    raw_reward: Optional[float] = None
    # Anything else a writer wants to keep with the run (monitor, scale, source data set).
    metadata: dict[str, Any] = Field(default_factory=dict)


class Step(BaseModel):
    """One line of steps.jsonl."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    screenshot: str = Field(description="PNG file name inside the trajectory folder")
    action_text: str = Field(description="the action as the policy wrote it")
    action: Optional[Action] = Field(default=None, description="parsed action; null when unparseable")
    observed_at: float = Field(description="UNIX time in seconds when the screenshot was taken")
    acted_at: Optional[float] = Field(default=None, description="UNIX time when the action finished")
    latency_ms: Optional[float] = Field(default=None, description="time the policy took to predict")
    state_bytes: int = Field(default=0, ge=0, description="policy history size after this step")
    executed: bool = Field(default=False, description="false for dry runs, skipped and failed actions")
    error: Optional[str] = None


class Trajectory(BaseModel):
    """A loaded trajectory folder."""

    folder: Path
    task: TaskInfo
    steps: list[Step]

    def screenshot_path(self, step: Step) -> Path:
        return self.folder / step.screenshot

    def load_screenshot(self, step: Step) -> Image.Image:
        with Image.open(self.screenshot_path(step)) as image:
            return image.convert("RGB")


def screenshot_name(index: int) -> str:
    return f"step_{index:04d}.png"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class TrajectoryRecorder:
    """Writes a trajectory folder step by step; usable as a context manager.

    The folder may exist but must not already contain a trajectory, so a rerun never mixes
    two runs' steps.
    """

    def __init__(self, folder: str | os.PathLike[str], task: TaskInfo) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (TASK_FILE, STEPS_FILE):
            if (self.folder / name).exists():
                raise FileExistsError(
                    f"{self.folder / name} already exists; choose a new --record folder or delete the old run"
                )
        self.task = task.model_copy(update={"status": task.status or STATUS_RUNNING})
        self.steps: list[Step] = []
        self._write_task()
        self._steps_file = open(self.folder / STEPS_FILE, "a", encoding="utf-8")
        logger.info("recording trajectory to %s", self.folder)

    def _write_task(self) -> None:
        data = self.task.model_dump_json(indent=2).encode("utf-8") + b"\n"
        _write_atomically(self.folder / TASK_FILE, data)

    def record_step(
        self,
        screenshot: Image.Image,
        *,
        action_text: str,
        action: Action | None,
        observed_at: float,
        acted_at: float | None = None,
        latency_ms: float | None = None,
        state_bytes: int = 0,
        executed: bool = False,
        error: str | None = None,
    ) -> Step:
        """Save the screenshot, then append and fsync the step line; return the Step."""
        if self._steps_file.closed:
            raise RuntimeError(f"the recorder of {self.folder} is already finished")
        index = len(self.steps)
        step = Step(
            index=index,
            screenshot=screenshot_name(index),
            action_text=action_text,
            action=action,
            observed_at=observed_at,
            acted_at=acted_at,
            latency_ms=latency_ms,
            state_bytes=state_bytes,
            executed=executed,
            error=error,
        )
        # The PNG goes first and by rename, so a step line never refers to a partial image.
        temporary = self.folder / (step.screenshot + ".tmp")
        screenshot.save(temporary, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        os.replace(temporary, self.folder / step.screenshot)
        self._steps_file.write(step.model_dump_json() + "\n")
        self._steps_file.flush()
        os.fsync(self._steps_file.fileno())
        self.steps.append(step)
        return step

    def finish(self, status: str, **updates: Any) -> TaskInfo:
        """Close the step file and rewrite task.json with the end time, status and `updates`.

        `updates` are TaskInfo fields such as answer, reward or raw_reward; calling finish again
        updates task.json again (the practice desktop adds the reward after the loop ends).
        """
        if not self._steps_file.closed:
            self._steps_file.close()
        from eval.provenance import now_iso

        fields = {"status": status, "end_time": now_iso(), **updates}
        try:
            self.task = TaskInfo.model_validate({**self.task.model_dump(), **fields})
        except ValidationError as error:
            raise ValueError(f"invalid task.json update {fields!r}: {error}") from error
        self._write_task()
        logger.info("trajectory %s finished: %s after %d steps", self.folder, status, len(self.steps))
        return self.task

    def close(self) -> None:
        """Close the step file without touching task.json (its status stays 'running')."""
        if not self._steps_file.closed:
            self._steps_file.close()

    def __enter__(self) -> TrajectoryRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def new_task_info(
    instruction: str, screen_size: tuple[int, int], model: str, **fields: Any
) -> TaskInfo:
    """Build a TaskInfo stamped with the current time and code version."""
    from eval.provenance import code_version, now_iso

    width, height = screen_size
    return TaskInfo(
        instruction=instruction,
        screen_width=width,
        screen_height=height,
        model=model,
        start_time=now_iso(),
        code_version=code_version(),
        **fields,
    )


def load_trajectory(folder: str | os.PathLike[str], check_screenshots: bool = True) -> Trajectory:
    """Read and validate a trajectory folder; raise TrajectoryError naming the file and line."""
    folder = Path(folder)
    task_path = folder / TASK_FILE
    if not task_path.is_file():
        raise TrajectoryError(f"{task_path} not found: {folder} is not a trajectory folder")
    try:
        task = TaskInfo.model_validate_json(task_path.read_bytes())
    except ValidationError as error:
        raise TrajectoryError(f"{task_path} is invalid: {error}") from error

    steps = _load_steps(folder / STEPS_FILE)
    for position, step in enumerate(steps):
        if step.index != position:
            raise TrajectoryError(
                f"{folder / STEPS_FILE} line {position + 1}: step index {step.index}, expected {position}"
            )
        if check_screenshots and not (folder / step.screenshot).is_file():
            raise TrajectoryError(
                f"{folder / STEPS_FILE} line {position + 1}: screenshot {folder / step.screenshot} not found"
            )
    return Trajectory(folder=folder, task=task, steps=steps)


def _load_steps(path: Path) -> list[Step]:
    if not path.exists():
        return []  # the run stopped before its first step
    lines = path.read_text(encoding="utf-8").split("\n")
    # A file that ends without a newline was cut short in the middle of its last line.
    cut_short = lines[-1] != ""
    if not cut_short:
        lines.pop()
    steps: list[Step] = []
    for number, line in enumerate(lines, start=1):
        try:
            steps.append(Step.model_validate_json(line))
        except ValidationError as error:
            if cut_short and number == len(lines):
                logger.warning("%s line %d is incomplete (the run was killed while writing it); ignoring it", path, number)
                break
            raise TrajectoryError(f"{path} line {number} is invalid: {error}") from error
    return steps
