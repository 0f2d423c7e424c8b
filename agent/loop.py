"""The agent loop: observe, predict, parse, act, record, check for the end.

The policy receives the instruction once, then each screenshot once and generates each action
once (`predict(commit=True)` keeps it in the history), so nothing is ever fed twice. A bad
action from the model is recorded as a failed step, never raised. The run stops on done(...),
after `max_steps`, after `max_failures` failed actions in a row, on Ctrl-C, on pyautogui's
fail-safe and on q at the confirm prompt; in every case task.json gets its end status, so the
trajectory on disk stays valid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from PIL import Image

from agent import trajectory as traj
from agent.actions import Action, ActionParseError, Done, parse_action
from agent.executor import ExecutionResult, Executor, FailSafeTriggered
from agent.policy import Policy
from agent.trajectory import TrajectoryRecorder

logger = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 30
# Failed actions in a row (unparseable, or rejected as outside the screen) before giving up.
# NOTE: 3 is a guess that stops a stuck model early; it has not been tuned on real runs.
DEFAULT_MAX_FAILURES = 3


class Screen(Protocol):
    """The part of `agent.screen.ScreenCapture` that the loop uses."""

    def grab(self) -> Image.Image: ...


@dataclass
class StepReport:
    """One finished step, passed to the `on_step` callback (the CLI's live view)."""

    index: int
    action_text: str
    action: Action | None
    latency_ms: float
    state_bytes: int
    outcome: str  # an ExecutionResult status, or "unparseable"
    error: str | None = None


@dataclass
class RunResult:
    status: str  # one of the STATUS_* values of agent.trajectory
    steps: int
    answer: str | None = None
    reports: list[StepReport] = field(default_factory=list)


def run_agent(
    instruction: str,
    policy: Policy,
    screen: Screen,
    executor: Executor,
    recorder: TrajectoryRecorder,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_failures: int = DEFAULT_MAX_FAILURES,
    on_step: Callable[[StepReport], None] | None = None,
) -> RunResult:
    """Run one episode and finish its trajectory; see the module docstring for when it stops."""
    if max_steps < 1 or max_failures < 1:
        raise ValueError(f"invalid limits max_steps={max_steps}, max_failures={max_failures}: both must be >= 1")
    result = RunResult(status=traj.STATUS_MAX_STEPS, steps=0)
    failures = 0
    try:
        # 1. The instruction, exactly once per episode.
        policy.start(instruction)
        for index in range(max_steps):
            report = _run_step(index, policy, screen, executor, recorder)
            result.reports.append(report)
            result.steps = index + 1
            if on_step is not None:
                on_step(report)

            # 6. Check for the end.
            if report.outcome == "stopped":
                result.status = traj.STATUS_INTERRUPTED
                break
            if isinstance(report.action, Done) and report.outcome in ("executed", "dry_run"):
                result.status = traj.STATUS_SUCCESS if report.action.status == "success" else traj.STATUS_FAILURE
                result.answer = report.action.answer
                break
            failures = failures + 1 if report.outcome in ("unparseable", "rejected") else 0
            if failures >= max_failures:
                logger.warning("stopping: %d failed actions in a row", failures)
                result.status = traj.STATUS_UNPARSEABLE
                break
    except KeyboardInterrupt:
        logger.warning("interrupted by Ctrl-C after %d steps", len(recorder.steps))
        result.status = traj.STATUS_INTERRUPTED
    except FailSafeTriggered as error:
        logger.warning("%s; stopping after %d steps", error, len(recorder.steps))
        result.status = traj.STATUS_INTERRUPTED
    except BaseException:
        # A policy or capture failure: keep the trajectory valid, then let the error surface.
        recorder.finish(traj.STATUS_ERROR)
        raise
    result.steps = len(recorder.steps)
    recorder.finish(result.status, answer=result.answer)
    logger.info("run ended: %s after %d steps", result.status, result.steps)
    return result


def _run_step(
    index: int, policy: Policy, screen: Screen, executor: Executor, recorder: TrajectoryRecorder
) -> StepReport:
    # 1. Observe: this step's screenshot, fed once.
    screenshot = screen.grab()
    observed_at = time.time()
    policy.observe(screenshot)

    # 2. Predict: the action text joins the policy's history as generated.
    started = time.perf_counter()
    action_text = policy.predict(commit=True)
    latency_ms = (time.perf_counter() - started) * 1000.0
    state_bytes = policy.state_bytes()

    # 3. Parse: a malformed action is a recorded failure, and nothing runs.
    action: Action | None = None
    error: str | None = None
    try:
        action = parse_action(action_text)
    except ActionParseError as parse_error:
        error = str(parse_error)
        logger.info("step %d: unparseable action %r", index, action_text)

    # 4. Act.
    execution: ExecutionResult | None = None
    try:
        if action is not None:
            execution = executor.execute(action)
            error = execution.error
    finally:
        # 5. Record, also when the fail-safe or Ctrl-C interrupted the action.
        outcome = "unparseable" if action is None else (execution.status if execution else "interrupted")
        if action is not None and execution is None:
            error = "interrupted while executing"
        recorder.record_step(
            screenshot,
            action_text=action_text,
            action=action,
            observed_at=observed_at,
            acted_at=time.time(),
            latency_ms=latency_ms,
            state_bytes=state_bytes,
            executed=execution is not None and execution.executed,
            error=error,
        )
    logger.debug("step %d: %s -> %s (%.0f ms)", index, action_text, outcome, latency_ms)
    return StepReport(index, action_text, action, latency_ms, state_bytes, outcome, error)
