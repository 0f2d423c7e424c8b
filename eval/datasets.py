"""Loaders that turn recorded trajectories of three formats into one episode type for replay.

Formats, recognised by their files:

- Holdfast's own trajectory folder (`task.json`, `steps.jsonl`, one PNG per step), read with
  `agent.trajectory.load_trajectory`. Boxes are not recorded, so points score by distance.
- AgentNetBench files (`<task_id>.json` with a `steps` list; screenshots in `images/` next to
  it). Ground truth comes from `ground_truth_actions` with their target boxes; a step without
  that list falls back to its pyautogui `action` code.
- OSWorld run folders (`traj.jsonl` with `step_num`, `action`, `screenshot_file`). OSWorld saves
  the screenshot taken after each action, so step k is replayed on the screenshot saved after
  step k-1, and the first step on `initial_state.png`.

A trajectory that cannot be used (unreadable JSON, a missing screenshot, an unknown action
type) becomes a LoadError naming its file and step, and loading goes on with the others.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from agent.actions import (
    Action,
    ActionParseError,
    Click,
    DoubleClick,
    Done,
    Drag,
    Key,
    Move,
    RightClick,
    Scroll,
    Type,
    Wait,
    parse_pyautogui,
)
from agent.trajectory import STEPS_FILE, TASK_FILE, TrajectoryError, load_trajectory
from eval.metrics import Box, TargetAction

logger = logging.getLogger(__name__)

FORMAT_HOLDFAST = "holdfast"
FORMAT_AGENTNETBENCH = "agentnetbench"
FORMAT_OSWORLD = "osworld"

OSWORLD_TRAJECTORY_FILE = "traj.jsonl"
OSWORLD_INITIAL_SCREENSHOT = "initial_state.png"
# OSWorld's WAIT sleeps for the harness's pause between actions, which traj.jsonl does not
# record. One second is used instead, which is harmless because the wait rule compares types only.
OSWORLD_WAIT_SECONDS = 1.0
AGENTNETBENCH_IMAGE_FOLDER = "images"


@dataclass(frozen=True)
class EpisodeStep:
    """One step to replay: the screenshot the recorded agent saw and the actions it took."""

    number: int  # the step number as recorded; numbers may skip
    screenshot: Path
    actions: tuple[TargetAction, ...]


@dataclass(frozen=True)
class Episode:
    """One recorded trajectory, ready for replay."""

    trajectory_id: str
    instruction: str
    source: Path  # the file or folder it was read from
    format: str
    steps: tuple[EpisodeStep, ...]


@dataclass(frozen=True)
class LoadError:
    """A trajectory that was skipped, with the file and step that made it unusable."""

    source: str
    step: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "step": self.step, "message": self.message}


class EpisodeLoadError(ValueError):
    """Raised inside a loader; `load_episodes` turns it into a LoadError."""

    def __init__(self, source: Path, step: int | None, message: str) -> None:
        where = f"{source}" if step is None else f"{source} step {step}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.step = step
        self.message = message


# ---------------------------------------------------------------------------------------------
# Discovery


def load_episodes(paths: Iterable[str | Path]) -> tuple[list[Episode], list[LoadError]]:
    """Load every trajectory under `paths` (files or folders); return the episodes and the errors.

    Trajectory ids must be unique across the run, because predictions files and `--resume`
    refer to them; a duplicate is reported as an error and skipped.
    """
    episodes: list[Episode] = []
    errors: list[LoadError] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for kind, source in _discover(Path(path), errors):
            try:
                episode = _LOADERS[kind](source)
            except EpisodeLoadError as error:
                logger.warning("skipping trajectory: %s", error)
                errors.append(LoadError(str(error.source), error.step, error.message))
                continue
            if episode.trajectory_id in seen:
                message = (
                    f"duplicate trajectory id {episode.trajectory_id!r} (also loaded from "
                    f"{seen[episode.trajectory_id]}); rename one of them"
                )
                logger.warning("skipping trajectory %s: %s", source, message)
                errors.append(LoadError(str(source), None, message))
                continue
            seen[episode.trajectory_id] = source
            episodes.append(episode)
    return episodes, errors


def _discover(path: Path, errors: list[LoadError]) -> Iterator[tuple[str, Path]]:
    """Yield (format, source) for each trajectory at or below `path`, in sorted order."""
    if not path.exists():
        errors.append(LoadError(str(path), None, "not found; pass a trajectory file or folder"))
        return
    if path.is_file():
        if path.name == OSWORLD_TRAJECTORY_FILE:
            yield FORMAT_OSWORLD, path.parent
        elif path.name in (TASK_FILE, STEPS_FILE):
            yield FORMAT_HOLDFAST, path.parent
        elif path.suffix == ".json":
            yield FORMAT_AGENTNETBENCH, path
        else:
            errors.append(LoadError(
                str(path), None,
                f"not a trajectory file; expected an AgentNetBench .json, {OSWORLD_TRAJECTORY_FILE} or {TASK_FILE}",
            ))
        return
    if (path / TASK_FILE).is_file():
        yield FORMAT_HOLDFAST, path
        return
    if (path / OSWORLD_TRAJECTORY_FILE).is_file():
        yield FORMAT_OSWORLD, path
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from _discover(child, errors)
        elif child.suffix == ".json":
            yield FORMAT_AGENTNETBENCH, child


# ---------------------------------------------------------------------------------------------
# Holdfast


def load_holdfast(folder: Path) -> Episode:
    """Load a Holdfast trajectory folder; steps whose recorded action did not parse are left out."""
    try:
        trajectory = load_trajectory(folder)
    except TrajectoryError as error:
        raise EpisodeLoadError(folder, None, str(error)) from error
    steps = []
    for step in trajectory.steps:
        if step.action is None:
            # NOTE: the live run fed this unparseable text to its policy, but replay cannot
            # score against it, so the step is left out and the policy never receives it.
            logger.warning("%s step %d: recorded action %r did not parse; not scored", folder, step.index, step.action_text)
            continue
        steps.append(EpisodeStep(step.index, trajectory.screenshot_path(step), (TargetAction(step.action),)))
    if not steps:
        raise EpisodeLoadError(folder, None, "no step with a parsed action to score")
    return Episode(folder.name, trajectory.task.instruction, folder, FORMAT_HOLDFAST, tuple(steps))


# ---------------------------------------------------------------------------------------------
# AgentNetBench


def load_agentnetbench(path: Path) -> Episode:
    """Load one AgentNetBench trajectory file with its ground-truth actions and boxes."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise EpisodeLoadError(path, None, "not an AgentNetBench trajectory: expected a JSON object with a 'steps' list")
    instruction = data.get("user_task_description") or data.get("high_level_task_description")
    if not isinstance(instruction, str) or not instruction.strip():
        raise EpisodeLoadError(path, None, "missing 'user_task_description' (the task instruction)")
    trajectory_id = str(data.get("task_id") or path.stem)

    steps = []
    for position, raw_step in enumerate(data["steps"], start=1):
        if not isinstance(raw_step, dict):
            raise EpisodeLoadError(path, position, f"a step must be a JSON object, got {type(raw_step).__name__}")
        number = raw_step.get("step_num", position)
        image = raw_step.get("image")
        if not isinstance(image, str) or not image:
            raise EpisodeLoadError(path, number, "missing 'image' (the screenshot file name)")
        screenshot = _agentnetbench_screenshot(path, image)
        if screenshot is None:
            raise EpisodeLoadError(
                path, number, f"screenshot {image!r} not found in {path.parent / AGENTNETBENCH_IMAGE_FOLDER} or {path.parent}",
            )
        steps.append(EpisodeStep(number, screenshot, _agentnetbench_targets(path, number, raw_step)))
    if not steps:
        raise EpisodeLoadError(path, None, "the trajectory has no steps")
    return Episode(trajectory_id, instruction, path, FORMAT_AGENTNETBENCH, tuple(steps))


def _agentnetbench_screenshot(path: Path, image: str) -> Path | None:
    for candidate in (path.parent / AGENTNETBENCH_IMAGE_FOLDER / image, path.parent / image):
        if candidate.is_file():
            return candidate
    return None


def _agentnetbench_targets(path: Path, number: int, step: dict[str, Any]) -> tuple[TargetAction, ...]:
    truth = step.get("ground_truth_actions")
    try:
        if truth is None:
            code = step.get("action")
            if not isinstance(code, str):
                raise EpisodeLoadError(path, number, "neither 'ground_truth_actions' nor an 'action' code string")
            return tuple(TargetAction(action) for action in parse_pyautogui(code))
        if not isinstance(truth, list) or not truth:
            raise EpisodeLoadError(path, number, "'ground_truth_actions' must be a non-empty list")
        return tuple(_GroundTruthReader(path, number).read_all(truth))
    except ActionParseError as error:
        raise EpisodeLoadError(path, number, str(error)) from error


class _GroundTruthReader:
    """Turns AgentNetBench's ground-truth actions of one step into Holdfast actions with boxes.

    A `moveTo` is held back: followed by `dragTo` it becomes the drag's start, followed by a
    `scroll` at the same point it becomes the scroll's position, and otherwise a Move of its own.
    """

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        self.targets: list[TargetAction] = []
        self.pending_move: TargetAction | None = None
        self.position: tuple[float, float] | None = None

    def fail(self, message: str) -> EpisodeLoadError:
        return EpisodeLoadError(self.path, self.number, message)

    def read_all(self, actions: list[Any]) -> list[TargetAction]:
        for index, item in enumerate(actions):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                raise self.fail(f"ground-truth action {index} must be an object with a string 'type'")
            params = item.get("params") or {}
            metadata = item.get("metadata") or {}
            if not isinstance(params, dict) or not isinstance(metadata, dict):
                raise self.fail(f"ground-truth action {index}: 'params' and 'metadata' must be objects")
            try:
                self.read(item["type"], params, self.boxes(metadata))
            except ValidationError as error:
                raise self.fail(f"ground-truth action {index} ({item['type']}): {error}") from error
        self.flush_move()
        return self.targets

    def boxes(self, metadata: dict[str, Any]) -> tuple[Box, ...]:
        boxes = []
        for entry in metadata.get("bboxes") or []:
            box = entry.get("rel_bbox") if isinstance(entry, dict) else None
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise self.fail(f"invalid box {entry!r}; expected rel_bbox [x, y, width, height]")
            boxes.append(tuple(float(v) for v in box))
        return tuple(boxes)

    def point(self, params: dict[str, Any]) -> tuple[float, float]:
        position = params.get("position")
        if position is None:
            if self.position is None:
                raise self.fail("an action without 'position' needs an earlier moveTo or click")
            return self.position
        if not isinstance(position, dict) or not all(isinstance(position.get(axis), (int, float)) for axis in "xy"):
            raise self.fail(f"invalid position {position!r}; expected {{'x': number, 'y': number}}")
        return float(position["x"]), float(position["y"])

    def flush_move(self) -> None:
        if self.pending_move is not None:
            self.targets.append(self.pending_move)
            self.pending_move = None

    def emit(self, target: TargetAction | Action) -> None:
        self.flush_move()
        self.targets.append(target if isinstance(target, TargetAction) else TargetAction(target))

    def read(self, kind: str, params: dict[str, Any], boxes: tuple[Box, ...]) -> None:
        clicks = {"click": Click, "doubleClick": DoubleClick, "rightClick": RightClick}
        if kind in clicks or kind in ("tripleClick", "middleClick"):
            x, y = self.point(params)
            if kind == "tripleClick":
                action: Action = Click(x=x, y=y, clicks=3)
            elif kind == "middleClick":
                action = Click(x=x, y=y, button="middle")
            else:
                action = clicks[kind](x=x, y=y)
            self.emit(TargetAction(action, boxes, point=(x, y)))
            self.position = (x, y)
        elif kind == "moveTo":
            self.flush_move()
            x, y = self.point(params)
            self.pending_move = TargetAction(Move(x=x, y=y), boxes, point=(x, y))
            self.position = (x, y)
        elif kind == "dragTo":
            if self.position is None:
                raise self.fail("dragTo needs an earlier moveTo or click for its start point")
            start_boxes = self.pending_move.boxes if self.pending_move is not None else ()
            self.pending_move = None
            (x, y), (to_x, to_y) = self.position, self.point(params)
            drag = Drag(x=x, y=y, to_x=to_x, to_y=to_y)
            self.emit(TargetAction(drag, start_boxes, boxes, point=(x, y), to_point=(to_x, to_y)))
            self.position = (to_x, to_y)
        elif kind in ("scroll", "hscroll"):
            self.read_scroll(kind, params, boxes)
        elif kind in ("write", "typewrite"):
            text = params.get("text", params.get("content"))
            if not isinstance(text, str):
                raise self.fail(f"{kind} needs a 'text' string, got {text!r}")
            self.emit(Type(text=text))
        elif kind == "press":
            keys = params.get("keys")
            keys = [keys] if isinstance(keys, str) else keys
            if not isinstance(keys, list) or not keys:
                raise self.fail(f"press needs 'keys', got {keys!r}")
            for key in keys:  # pyautogui.press(['a', 'b']) presses the keys one after another
                self.emit(Key(keys=[key]))
        elif kind == "hotkey":
            keys = params.get("keys")
            keys = [keys] if isinstance(keys, str) else keys
            if not isinstance(keys, list) or not keys:
                raise self.fail(f"hotkey needs 'keys', got {keys!r}")
            self.emit(Key(keys=keys))
        elif kind == "terminate":
            self.emit(Done(status=_done_status(params.get("status", "success"))))
        elif kind == "wait":
            self.emit(Wait(seconds=params.get("seconds", 1.0)))
        else:
            known = "click, doubleClick, rightClick, tripleClick, middleClick, moveTo, dragTo, scroll, hscroll, write, press, hotkey, terminate, wait"
            raise self.fail(f"unknown action type {kind!r}; expected one of {known}")

    def read_scroll(self, kind: str, params: dict[str, Any], boxes: tuple[Box, ...]) -> None:
        amount = params.get("amount", params.get("clicks"))
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or int(amount) == 0:
            raise self.fail(f"{kind} needs a non-zero 'amount', got {amount!r}")
        x, y = self.point(params)
        position_boxes = boxes
        if self.pending_move is not None and self.pending_move.point == (x, y):
            # The moveTo placed the pointer for this scroll, so its boxes are the scroll's target.
            position_boxes = self.pending_move.boxes + boxes
            self.pending_move = None
        if kind == "hscroll":
            direction = "right" if amount > 0 else "left"
        else:
            direction = "up" if amount > 0 else "down"  # pyautogui: positive scrolls up
        scroll = Scroll(x=x, y=y, amount=abs(int(amount)), direction=direction)
        self.emit(TargetAction(scroll, position_boxes, point=(x, y)))
        self.position = (x, y)


def _done_status(status: Any) -> str:
    # OSWorld and some AgentNet recordings write 'fail', where Holdfast's done() uses 'failure'.
    return "failure" if str(status).lower() in ("fail", "failed", "failure") else str(status).lower()


# ---------------------------------------------------------------------------------------------
# OSWorld


def load_osworld(folder: Path) -> Episode:
    """Load an OSWorld run folder; pixel coordinates become screen fractions."""
    path = folder / OSWORLD_TRAJECTORY_FILE
    records = _read_jsonl(path)
    instruction = _osworld_instruction(folder, records)

    # Group the action lines by step; one step may hold several actions.
    grouped: dict[int, list[dict[str, Any]]] = {}
    for line_number, record in records:
        if "step_num" not in record:
            continue  # header lines such as {"instruction": ..., "initial_state": ...}
        number = record["step_num"]
        if isinstance(number, bool) or not isinstance(number, int):
            raise EpisodeLoadError(path, None, f"line {line_number}: 'step_num' must be an integer, got {number!r}")
        grouped.setdefault(number, []).append(record)
    if not grouped:
        raise EpisodeLoadError(path, None, "no step lines (with 'step_num') found")

    observation: Path | None = folder / OSWORLD_INITIAL_SCREENSHOT
    if not observation.is_file():
        # NOTE: without the screenshot from before the first action, that step cannot be
        # replayed; it is dropped and the episode starts at the second step.
        logger.warning("%s: %s not found, so step %d is not scored", folder, OSWORLD_INITIAL_SCREENSHOT, min(grouped))
        observation = None

    screen_size: tuple[int, int] | None = None
    steps = []
    for number in sorted(grouped):
        lines = grouped[number]
        actions: list[TargetAction] = []
        for record in lines:
            if screen_size is None:
                screen_size = _osworld_screen_size(folder, number, records)
            actions.extend(TargetAction(action) for action in _osworld_actions(path, number, record.get("action"), screen_size))
        if observation is not None:
            steps.append(EpisodeStep(number, observation, tuple(actions)))
        after = lines[-1].get("screenshot_file")
        observation = folder / after if isinstance(after, str) and after else None
        if observation is not None and not observation.is_file() and number != max(grouped):
            raise EpisodeLoadError(path, number, f"screenshot {observation} not found")
        if observation is None and number != max(grouped):
            raise EpisodeLoadError(path, number, "missing 'screenshot_file', which the next step is replayed on")
    if not steps:
        raise EpisodeLoadError(path, None, "no step left to score")
    return Episode(folder.name, instruction, folder, FORMAT_OSWORLD, tuple(steps))


def _osworld_instruction(folder: Path, records: list[tuple[int, dict[str, Any]]]) -> str:
    for _, record in records:
        if isinstance(record.get("instruction"), str):
            return record["instruction"]
    # OSWorld keeps the instruction in the task configuration; accept a copy next to traj.jsonl.
    for candidate in sorted(folder.glob("*.json")):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("instruction"), str):
            return data["instruction"]
    logger.warning("%s: no instruction found (no 'instruction' line in %s, no task JSON); replaying with an empty one",
                   folder, OSWORLD_TRAJECTORY_FILE)
    return ""


def _osworld_screen_size(folder: Path, number: int, records: list[tuple[int, dict[str, Any]]]) -> tuple[int, int]:
    """Return the screen size in pixels, read from the first screenshot of the run."""
    names = [OSWORLD_INITIAL_SCREENSHOT] + [
        record["screenshot_file"] for _, record in records if isinstance(record.get("screenshot_file"), str)
    ]
    for name in names:
        if (folder / name).is_file():
            try:
                with Image.open(folder / name) as image:
                    return image.size
            except (OSError, UnidentifiedImageError) as error:
                raise EpisodeLoadError(folder / name, number, f"unreadable screenshot: {error}") from error
    raise EpisodeLoadError(folder / OSWORLD_TRAJECTORY_FILE, number, "no screenshot found to read the screen size from")


def _osworld_actions(path: Path, number: int, action: Any, screen_size: tuple[int, int]) -> list[Action]:
    if isinstance(action, dict):
        # Agents with structured actions keep the pyautogui code under 'command'.
        if isinstance(action.get("command"), str):
            action = action["command"]
        elif isinstance(action.get("action_type"), str):
            action = action["action_type"]
        else:
            raise EpisodeLoadError(path, number, f"unknown action type: {action!r}; expected pyautogui code, DONE, FAIL or WAIT")
    if not isinstance(action, str):
        raise EpisodeLoadError(path, number, f"unknown action type: {action!r}; expected pyautogui code, DONE, FAIL or WAIT")
    control = action.strip().upper()
    if control == "DONE":
        return [Done(status="success")]
    if control == "FAIL":
        return [Done(status="failure")]
    if control == "WAIT":
        return [Wait(seconds=OSWORLD_WAIT_SECONDS)]
    # TODO: OSWorld's computer_13 action space (dicts such as {"action_type": "CLICK", ...}) is
    # not read yet; such runs are reported as unknown action types.
    try:
        return parse_pyautogui(pixels_to_fractions(action, *screen_size))
    except ActionParseError as error:
        raise EpisodeLoadError(path, number, f"unknown action type: {error}") from error


# pyautogui calls whose first two arguments (or an (x, y) tuple as the first) are a screen point,
# and the wheel calls, whose point follows the number of clicks.
_POINT_CALLS = frozenset({"click", "doubleClick", "tripleClick", "rightClick", "middleClick", "moveTo", "dragTo"})
_WHEEL_CALLS = frozenset({"scroll", "vscroll", "hscroll"})


class _PixelsToFractions(ast.NodeTransformer):
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height

    def scale(self, node: ast.expr, size: int) -> ast.expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(node.value / size), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if function not in _POINT_CALLS and function not in _WHEEL_CALLS:
            return node
        index = 1 if function in _WHEEL_CALLS else 0
        if len(node.args) > index and isinstance(node.args[index], ast.Tuple) and len(node.args[index].elts) == 2:
            pair = node.args[index]
            pair.elts = [self.scale(pair.elts[0], self.width), self.scale(pair.elts[1], self.height)]
        else:
            if len(node.args) > index:
                node.args[index] = self.scale(node.args[index], self.width)
            if len(node.args) > index + 1:
                node.args[index + 1] = self.scale(node.args[index + 1], self.height)
        for keyword in node.keywords:
            if keyword.arg == "x":
                keyword.value = self.scale(keyword.value, self.width)
            elif keyword.arg == "y":
                keyword.value = self.scale(keyword.value, self.height)
        return node


def pixels_to_fractions(code: str, width: int, height: int) -> str:
    """Rewrite pyautogui code with pixel coordinates to use fractions of a width x height screen."""
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise ActionParseError(code, f"syntax error on line {error.lineno}: {error.msg}") from error
    return ast.unparse(_PixelsToFractions(width, height).visit(tree))


# ---------------------------------------------------------------------------------------------
# Files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise EpisodeLoadError(path, None, f"cannot read the file: {error}") from error
    except json.JSONDecodeError as error:
        raise EpisodeLoadError(path, None, f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from error


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EpisodeLoadError(path, None, f"cannot read the file: {error}") from error
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EpisodeLoadError(path, None, f"invalid JSON on line {line_number}: {error.msg}") from error
        if not isinstance(record, dict):
            raise EpisodeLoadError(path, None, f"line {line_number} must be a JSON object")
        records.append((line_number, record))
    return records


_LOADERS = {
    FORMAT_HOLDFAST: load_holdfast,
    FORMAT_AGENTNETBENCH: load_agentnetbench,
    FORMAT_OSWORLD: load_osworld,
}
