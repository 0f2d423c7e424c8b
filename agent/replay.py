"""Re-execute a recorded trajectory on the live desktop and compare each result with the recording.

After step i's action runs, the screen should look like the recording's screenshot of step
i + 1. The score is the mean absolute difference of all RGB values, scaled to 0..1 (0 is
identical, 1 is black against white); a step passes when the score is at most the tolerance.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageChops, ImageStat

from agent.actions import Done, format_action
from agent.executor import Executor
from agent.loop import Screen
from agent.trajectory import Trajectory

logger = logging.getLogger(__name__)

# A blinking text cursor or an animated spinner changes a few hundred pixels, far below 1 %
# of a 1280x800 screen's RGB values; a changed layout or a missed click moves much more.
DEFAULT_TOLERANCE = 0.01
# Time for the application to redraw after an action before the screen is captured.
DEFAULT_SETTLE_SECONDS = 0.5


@dataclass
class ReplayStep:
    index: int
    action_text: str
    outcome: str  # an ExecutionResult status, or "not replayed" for steps without a valid action
    score: float | None = None  # None when there is no recorded screenshot to compare with
    passed: bool | None = None
    error: str | None = None


def pixel_difference(live: Image.Image, recorded: Image.Image) -> float:
    """Return the mean absolute RGB difference in 0..1; `live` is resized to `recorded`'s size."""
    recorded = recorded.convert("RGB")
    live = live.convert("RGB")
    if live.size != recorded.size:
        live = live.resize(recorded.size, Image.Resampling.BILINEAR)
    difference = ImageChops.difference(live, recorded)
    return sum(ImageStat.Stat(difference).mean) / (3 * 255.0)


def replay_trajectory(
    trajectory: Trajectory,
    executor: Executor,
    screen: Screen,
    tolerance: float = DEFAULT_TOLERANCE,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    on_step: Callable[[ReplayStep], None] | None = None,
) -> list[ReplayStep]:
    """Run each recorded action again and score the screen against the next recorded screenshot.

    Steps whose action was unparseable or rejected when recorded are not replayed. Replay ends
    at the first done(...) and when the user answers q at the confirm prompt.
    """
    results: list[ReplayStep] = []
    steps = trajectory.steps
    for position, step in enumerate(steps):
        if step.action is None or step.error is not None:
            replayed = ReplayStep(step.index, step.action_text, "not replayed", error=step.error)
        else:
            replayed = _replay_step(trajectory, position, executor, screen, tolerance, settle_seconds)
        results.append(replayed)
        if on_step is not None:
            on_step(replayed)
        if replayed.outcome == "stopped" or isinstance(step.action, Done):
            break
    return results


def _replay_step(
    trajectory: Trajectory, position: int, executor: Executor, screen: Screen, tolerance: float, settle_seconds: float
) -> ReplayStep:
    step = trajectory.steps[position]
    text = format_action(step.action)
    execution = executor.execute(step.action)
    replayed = ReplayStep(step.index, text, execution.status, error=execution.error)
    if execution.status not in ("executed", "dry_run") or isinstance(step.action, Done):
        return replayed
    if position + 1 >= len(trajectory.steps):
        logger.info("step %d: no recorded screenshot after the last step to compare with", step.index)
        return replayed
    time.sleep(settle_seconds)
    expected = trajectory.load_screenshot(trajectory.steps[position + 1])
    replayed.score = pixel_difference(screen.grab(), expected)
    replayed.passed = replayed.score <= tolerance
    logger.debug("step %d: %s score %.4f", step.index, text, replayed.score)
    return replayed
