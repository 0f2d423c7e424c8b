"""Episodes on the practice desktop: observe, predict, parse, act, record, check for the end.

This is the agent loop of `agent.loop` with the MiniWoB++ episode around it: each episode starts
with a seed, the task's own reward decides success (raw reward > 0), and the loop stops as soon
as the page reports done, because a further click would land on MiniWoB's START cover.

Seed split: seeds below `EVAL_SEED_START` are for training data (`practice record`); evaluation
(`practice run`) uses seeds from `EVAL_SEED_START` up, so no evaluated problem was trained on.
Episode i of a command uses seed S + i, the same seeds for every task.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent import trajectory as traj
from agent.actions import ActionParseError, Done, format_action, parse_action
from agent.policy import Policy
from tools.practice_desktop import DesktopState
from tools.practice_env import DEFAULT_EPISODE_SECONDS, PageMapping, PracticeEnv

logger = logging.getLogger(__name__)

EVAL_SEED_START = 1_000_000
# The listed tasks need at most 5 actions; the limit leaves a model room to correct itself.
DEFAULT_MAX_STEPS = 10
EXECUTOR_PAUSE_SECONDS = 0.05  # pyautogui.PAUSE; the end check after each action waits for the page


class SeedSplitError(ValueError):
    """Seeds from the wrong side of the train/evaluation split."""


def check_seeds(first_seed: int, episodes: int, purpose: str) -> None:
    """Raise SeedSplitError unless seeds first_seed..first_seed+episodes-1 suit `purpose`."""
    last_seed = first_seed + episodes - 1
    if first_seed < 0:
        raise SeedSplitError(f"invalid seed {first_seed}: seeds are non-negative integers")
    if purpose == "train" and last_seed >= EVAL_SEED_START:
        raise SeedSplitError(
            f"seeds {first_seed}..{last_seed} reach the evaluation range (>= {EVAL_SEED_START}); "
            f"record demonstrations with seeds below {EVAL_SEED_START}"
        )
    if purpose == "eval" and first_seed < EVAL_SEED_START:
        raise SeedSplitError(
            f"seed {first_seed} is in the training range; evaluate with --seed {EVAL_SEED_START} or higher"
        )


@dataclass
class EpisodeResult:
    task: str
    seed: int
    instruction: str
    status: str  # a STATUS_* value of agent.trajectory, or "done" when the page ended the episode
    steps: int
    reward: float
    raw_reward: float
    latencies_ms: list[float] = field(default_factory=list)  # policy predict time per step
    step_seconds: list[float] = field(default_factory=list)  # wall time per step, capture to end check
    folder: str | None = None

    @property
    def success(self) -> bool:
        return self.raw_reward > 0


class PracticeSession:
    """One client of the practice desktop: browser session, screen capture, executor, mapping."""

    def __init__(self, state: DesktopState, episode_seconds: float = DEFAULT_EPISODE_SECONDS) -> None:
        # pyautogui and mss bind to DISPLAY when they connect, so it is set before either loads.
        os.environ.update(state.environment())
        os.environ.pop("WAYLAND_DISPLAY", None)
        from agent.executor import Executor
        from agent.screen import ScreenCapture

        self.state = state
        self.env = PracticeEnv(state, episode_seconds)
        self.capture = ScreenCapture()
        self.geometry = self.capture.geometry()
        self.executor = Executor(self.geometry, pause=EXECUTOR_PAUSE_SECONDS)
        self.mapping: PageMapping | None = None
        # A browser update can change the screens a pixel policy was trained on, so every
        # trajectory and summary records the browser version.
        capabilities = self.env.driver.capabilities
        self.browser = f"{capabilities.get('browserName', 'unknown')} {capabilities.get('browserVersion', 'unknown')}"

    def calibrate(self, task: str) -> PageMapping:
        """Measure the page-to-screen mapping on `task`'s page and check it with the real pointer."""
        from agent.actions import Move

        self.env.open_task(task)
        rough = self.env.calibrate(self.capture.grab)

        def move_pointer(page_x: float, page_y: float) -> None:
            x, y = rough.to_normalised(self.geometry, page_x, page_y)
            self.executor.execute(Move(x=x, y=y))

        self.mapping = self.env.calibrate(self.capture.grab, move_pointer)
        return self.mapping

    def run_episode(
        self,
        task: str,
        seed: int,
        policy: Policy,
        folder: Path,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> EpisodeResult:
        """Run one seeded episode of `task` with `policy`, recording it into `folder`."""
        from agent.trajectory import TrajectoryRecorder, new_task_info

        instruction = self.env.reset(task, seed)
        info = new_task_info(
            instruction,
            self.geometry.size,
            policy.name,
            task_name=task,
            seed=seed,
            metadata={
                "practice_scale": self.state.scale,
                "episode_seconds": self.env.episode_seconds,
                "browser": self.browser,
            },
        )
        result = EpisodeResult(task, seed, instruction, traj.STATUS_MAX_STEPS, 0, 0.0, 0.0, folder=str(folder))
        recorder = TrajectoryRecorder(folder, info)
        try:
            policy.start(instruction)
            # 1-6 of the agent loop, with the page's done flag as the first end check.
            for index in range(max_steps):
                ended = self._run_step(index, policy, recorder, result)
                if ended:
                    break
        except BaseException:
            recorder.finish(traj.STATUS_ERROR)
            try:
                self.env.end_episode()
            except Exception as cleanup_error:
                # The browser may be gone too (a signal to the whole process group). The error that
                # stopped the episode is the one to report, so this one only gets a log line.
                logger.warning("%s seed %d: could not end the episode: %s", task, seed, cleanup_error)
            raise
        # An episode still running (out of steps, or the policy gave up) ends with reward 0.
        status = self.env.end_episode()
        result.steps = len(recorder.steps)
        result.reward, result.raw_reward = status.reward, status.raw_reward
        recorder.finish(result.status, reward=status.reward, raw_reward=status.raw_reward)
        logger.debug(
            "%s seed %d: %s, raw reward %.2f after %d steps", task, seed, result.status, status.raw_reward, result.steps
        )
        return result

    def _run_step(self, index: int, policy: Policy, recorder: traj.TrajectoryRecorder, result: EpisodeResult) -> bool:
        """Run one step; return True when the episode is over."""
        started = time.perf_counter()
        # 1. Observe.
        screenshot = self.capture.grab()
        observed_at = time.time()
        policy.observe(screenshot)

        # 2. Predict.
        predict_started = time.perf_counter()
        action_text = policy.predict(commit=True)
        latency_ms = (time.perf_counter() - predict_started) * 1000.0
        result.latencies_ms.append(latency_ms)

        # 3. Parse.
        action, error = None, None
        try:
            action = parse_action(action_text)
        except ActionParseError as parse_error:
            error = str(parse_error)

        # 4. Act, unless the policy ended the episode itself.
        executed = False
        if action is not None and not isinstance(action, Done):
            execution = self.executor.execute(action)
            executed, error = execution.executed, execution.error

        # 5. Record.
        recorder.record_step(
            screenshot,
            action_text=action_text,
            action=action,
            observed_at=observed_at,
            acted_at=time.time(),
            latency_ms=latency_ms,
            state_bytes=policy.state_bytes(),
            executed=executed,
            error=error,
        )

        # 6. Check for the end: the page first, since no input may follow its done flag.
        status = self.env.wait_for_input() if executed else self.env.status()
        result.step_seconds.append(time.perf_counter() - started)
        if status.done:
            result.status = traj.STATUS_SUCCESS if status.success else traj.STATUS_FAILURE
            return True
        if isinstance(action, Done):
            # The policy stopped but the task did not end: that is a failure whatever it claims.
            result.status = traj.STATUS_FAILURE
            logger.debug("policy returned %s before the task ended", format_action(action))
            return True
        return False

    def close(self) -> None:
        self.env.close()
        self.capture.close()


@dataclass
class TaskSummary:
    episodes: int
    successes: int
    success_rate: float
    mean_steps: float
    mean_raw_reward: float
    mean_latency_ms: float  # policy predict time per step
    mean_step_seconds: float  # wall time per step including action and end check


def summarise(results: list[EpisodeResult]) -> dict[str, Any]:
    """Return {"success_rate", "episodes", "per_task": {task: TaskSummary as dict}}."""
    per_task: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(result.task for result in results):
        chosen = [result for result in results if result.task == task]
        latencies = [value for result in chosen for value in result.latencies_ms]
        step_times = [value for result in chosen for value in result.step_seconds]
        successes = sum(result.success for result in chosen)
        per_task[task] = asdict(
            TaskSummary(
                episodes=len(chosen),
                successes=successes,
                success_rate=successes / len(chosen),
                mean_steps=statistics.fmean(result.steps for result in chosen),
                mean_raw_reward=statistics.fmean(result.raw_reward for result in chosen),
                mean_latency_ms=statistics.fmean(latencies) if latencies else 0.0,
                mean_step_seconds=statistics.fmean(step_times) if step_times else 0.0,
            )
        )
    total = len(results)
    return {
        "success_rate": sum(result.success for result in results) / total if total else 0.0,
        "episodes": total,
        "per_task": per_task,
    }


def run_tasks(
    session: PracticeSession,
    tasks: list[str],
    episodes: int,
    first_seed: int,
    make_policy: Callable[[], Policy],
    out: Path,
    keep_failures: bool = True,
    max_steps: int = DEFAULT_MAX_STEPS,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Run `episodes` seeded episodes per task, each recorded under out/TASK/seed-SEED.

    With keep_failures=False the folders of unsolved episodes are deleted (demonstrations).
    """
    policy = make_policy()
    results = []
    for task in tasks:
        for seed in range(first_seed, first_seed + episodes):
            folder = out / task / f"seed-{seed}"
            try:
                result = session.run_episode(task, seed, policy, folder, max_steps=max_steps)
            except BaseException:
                # An interrupted demonstration is half an episode, which training would imitate.
                if not keep_failures:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            if not result.success and not keep_failures:
                shutil.rmtree(folder)
                result.folder = None
            results.append(result)
            if on_episode is not None:
                on_episode(result)
    return results
