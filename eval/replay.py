"""Offline replay: stream each recorded episode through a policy with teacher forcing and score it.

For every trajectory the policy gets a fresh session (`start`), then for each step:

1. observe the recorded screenshot,
2. predict the next action without committing it (`predict(commit=False)`),
3. score the prediction against the recorded actions (eval.metrics),
4. feed the recorded actions (`feed_action`), so the policy's history follows the recording
   whatever it predicted.

An action text contains one action per line in Holdfast's compact form, or pyautogui code with
coordinates as fractions of the screen (AgentNet's form); ground truth is fed in the compact form.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image, UnidentifiedImageError

from agent.actions import Action, ActionParseError, format_action, parse_action, parse_pyautogui
from agent.policy import Policy
from eval.datasets import Episode, EpisodeStep, LoadError
from eval.metrics import score_step

logger = logging.getLogger(__name__)

# First-line prefixes that mark an action text as pyautogui code rather than the compact form.
PYAUTOGUI_PREFIXES = ("pyautogui.", "computer.", "import ", "from ")


def format_actions(actions: Sequence[Action]) -> str:
    """Return the compact text of several actions, one per line."""
    return "\n".join(format_action(action) for action in actions)


def parse_actions(text: str) -> list[Action]:
    """Parse an action text in either accepted form; raise ActionParseError when it is invalid.

    Empty text is no action. Text whose first line starts with a pyautogui or computer call (or
    an import) is read as pyautogui code. Anything else is read as compact actions, one per line.
    """
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith(PYAUTOGUI_PREFIXES):
        return parse_pyautogui(stripped)
    return [parse_action(line) for line in stripped.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# Reference policies


@runtime_checkable
class EpisodeAwarePolicy(Protocol):
    """A policy that reads the episode being replayed (the oracle, recorded predictions)."""

    def set_episode(self, episode: Episode) -> None: ...


class OraclePolicy:
    """Predicts the recorded actions, so every step must score 1; a check of the scorer itself."""

    name = "oracle"

    def __init__(self) -> None:
        self.steps: Sequence[EpisodeStep] = ()
        self.position = 0

    def set_episode(self, episode: Episode) -> None:
        self.steps = episode.steps

    def start(self, instruction: str) -> None:
        self.position = 0

    def observe(self, screenshot: Image.Image) -> None:
        pass

    def predict(self, *, commit: bool = True) -> str:
        text = format_actions([target.action for target in self.steps[self.position].actions])
        if commit:
            self.position += 1
        return text

    def feed_action(self, action_text: str) -> None:
        self.position += 1

    def state_bytes(self) -> int:
        return 0


class PredictionsError(ValueError):
    """A predictions file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Prediction:
    action: str
    latency_s: float | None = None


def load_predictions(path: str | Path) -> dict[tuple[str, int], Prediction]:
    """Read a predictions JSONL file into {(trajectory_id, step): Prediction}.

    Each line is {"trajectory_id": str, "step": int, "action": str} with an optional
    "latency_s" (seconds the external agent took). `step` is the recorded step number.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PredictionsError(f"cannot read predictions file {path}: {error}") from error
    predictions: dict[tuple[str, int], Prediction] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PredictionsError(f"{path} line {number}: invalid JSON: {error.msg}") from error
        if not isinstance(record, dict):
            raise PredictionsError(f"{path} line {number}: expected a JSON object")
        trajectory_id, step, action = record.get("trajectory_id"), record.get("step"), record.get("action")
        latency = record.get("latency_s")
        if not isinstance(trajectory_id, str) or isinstance(step, bool) or not isinstance(step, int):
            raise PredictionsError(f"{path} line {number}: needs a string 'trajectory_id' and an integer 'step'")
        if not isinstance(action, str):
            raise PredictionsError(f"{path} line {number}: 'action' must be a string, got {action!r}")
        if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
            raise PredictionsError(f"{path} line {number}: 'latency_s' must be a number, got {latency!r}")
        key = (trajectory_id, step)
        if key in predictions:
            raise PredictionsError(f"{path} line {number}: a second prediction for trajectory {trajectory_id!r} step {step}")
        predictions[key] = Prediction(action, None if latency is None else float(latency))
    return predictions


class PredictionsPolicy:
    """Replays the actions an external agent predicted, read from a predictions file."""

    name = "predictions"

    def __init__(self, predictions: dict[tuple[str, int], Prediction]) -> None:
        self.predictions = predictions
        self.episode: Episode | None = None
        self.position = 0

    def set_episode(self, episode: Episode) -> None:
        self.episode = episode

    def start(self, instruction: str) -> None:
        self.position = 0

    def observe(self, screenshot: Image.Image) -> None:
        pass

    def current(self) -> Prediction | None:
        assert self.episode is not None, "set_episode must be called before the episode starts"
        step = self.episode.steps[self.position]
        return self.predictions.get((self.episode.trajectory_id, step.number))

    def predict(self, *, commit: bool = True) -> str:
        prediction = self.current()
        if commit:
            self.position += 1
        return "" if prediction is None else prediction.action

    def reported_latency_s(self) -> float | None:
        prediction = self.current()
        return None if prediction is None else prediction.latency_s

    def feed_action(self, action_text: str) -> None:
        self.position += 1

    def state_bytes(self) -> int:
        return 0


# ---------------------------------------------------------------------------------------------
# Replay


class ReplayError(RuntimeError):
    """A trajectory that failed during replay (an unreadable screenshot); names file and step."""

    def __init__(self, error: LoadError) -> None:
        super().__init__(f"{error.source} step {error.step}: {error.message}")
        self.error = error


def replay_episode(policy: Policy, episode: Episode) -> Iterator[dict[str, Any]]:
    """Replay one episode and yield one step record per step (the lines of steps.jsonl).

    Raises ReplayError when a screenshot cannot be decoded; records already yielded for the
    episode are then incomplete and the caller should drop them.
    """
    if isinstance(policy, EpisodeAwarePolicy):
        policy.set_episode(episode)
    policy.start(episode.instruction)
    for step in episode.steps:
        try:
            with Image.open(step.screenshot) as image:
                screenshot = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise ReplayError(LoadError(str(step.screenshot), step.number, f"unreadable screenshot: {error}")) from error

        started = time.perf_counter()
        policy.observe(screenshot)
        prediction = policy.predict(commit=False)
        latency_s = time.perf_counter() - started
        reported_latency = getattr(policy, "reported_latency_s", None)
        if reported_latency is not None:
            latency_s = reported_latency()

        parse_error = None
        try:
            predicted = parse_actions(prediction)
        except ActionParseError as error:
            parse_error = error.reason
            predicted = []
        truth = [target.action for target in step.actions]
        result = score_step(predicted, step.actions)

        truth_text = format_actions(truth)
        policy.feed_action(truth_text)
        yield {
            "trajectory_id": episode.trajectory_id,
            "step": step.number,
            "screenshot": str(step.screenshot),
            "prediction": prediction,
            "predicted_actions": [format_action(action) for action in predicted],
            "parse_error": parse_error,
            "ground_truth": truth_text,
            "score": result.score,
            "action_scores": [{"type": kind, "score": score} for kind, score in result.action_scores],
            "android_control": result.android_control,
            "latency_s": latency_s,
            "state_bytes": policy.state_bytes(),
        }


def run_replay(
    episodes: Iterable[Episode],
    policy: Policy,
    on_step: Callable[[dict[str, Any]], None] = lambda record: None,
    on_trajectory: Callable[[Episode, list[dict[str, Any]]], None] = lambda episode, records: None,
    on_error: Callable[[Episode, LoadError], None] = lambda episode, error: None,
) -> None:
    """Replay episodes in order, reporting each step, each finished trajectory and each failure."""
    for episode in episodes:
        logger.debug("replaying %s (%d steps) from %s", episode.trajectory_id, len(episode.steps), episode.source)
        records: list[dict[str, Any]] = []
        try:
            for record in replay_episode(policy, episode):
                records.append(record)
                on_step(record)
        except ReplayError as error:
            logger.warning("skipping trajectory %s: %s", episode.trajectory_id, error)
            on_error(episode, error.error)
            continue
        on_trajectory(episode, records)
