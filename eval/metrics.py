"""Per-step scoring rules for offline replay and their aggregation over a run.

The step rules follow AgentNetBench's offline evaluation (OpenCUA):

- The first predicted action's type must be among the ground-truth types, otherwise the step
  scores 0.
- Click, move and drag points score 1 inside a ground-truth box (edges included); otherwise,
  with d the Euclidean distance to the ground-truth point in screen fractions,
  1 if d <= 0.01*sqrt(2), else exp(-120 * (d - 0.01*sqrt(2))).
- Typed text scores by edit similarity 1 - lev(p, g) / max(|p|, |g|) of the lower-cased,
  stripped texts, times 0.9 when only one side ends with a newline; a similarity of at least 0.8
  scores 1, below that similarity / 0.8.
- Keys score 1 when both sides press the same set of keys, ignoring case and order.
- done() scores 1 when the status matches.
- A typed text followed by a press of Enter alone is merged into one typed text ending with a
  newline, on both sides, before anything is compared.

Holdfast's action space is coarser than pyautogui's in two places, and the rules map onto it so
that a prediction in either form gets the score AgentNetBench would give:

- `moveTo` then `dragTo` is one Drag here. Its score is the mean of its start point's score
  (against the moveTo's boxes) and its end point's score (against the dragTo's boxes), which is
  AgentNetBench's mean over the two ground-truth types.
- `moveTo` then `scroll` is one Scroll here. Its score is the mean of its point's score and the
  wheel score: 0 for the wrong direction, else min(a, b) / max(a, b) of the two amounts.

With several ground-truth actions in a step, action i is compared with predicted action i
(0 when missing or of another type). Scores are averaged per type, and the step score is the
mean over types. A prediction with more actions than the ground truth is scaled by
len(truth) / len(predicted).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.actions import Action, Click, DoubleClick, Done, Drag, Key, Move, RightClick, Scroll, Type, Wait

# A target element's box: left, top, width, height, as fractions of the screen.
Box = tuple[float, float, float, float]
Point = tuple[float, float]

# Points closer than one hundredth of the screen along both axes count as exact.
COORDINATE_TOLERANCE = 0.01 * math.sqrt(2)
# Decay of the point score beyond the tolerance, per screen fraction: a miss by 0.05 of the
# screen beyond it scores exp(-6), about 0.0025.
DISTANCE_DECAY = 120.0
WRITE_SIMILARITY_THRESHOLD = 0.8
NEWLINE_MISMATCH_FACTOR = 0.9
ENTER_KEYS = frozenset({"enter", "return"})
# AndroidControl and AITW count a click correct within 14% of the screen of the target. We read
# that as the Euclidean distance in screen fractions (x / width, y / height), not in pixels.
ANDROID_CONTROL_RADIUS = 0.14
# Slack on every comparison with an edge or a threshold, so a point written with 3 or 4
# decimals that lies on the edge mathematically is not pushed out by rounding (0.2 + 0.1 is
# 0.30000000000000004 in binary floating point).
FLOAT_SLACK = 1e-9

# Action types (see `action_type`) whose target is one point on the screen.
CLICK_TYPES = frozenset({"click", "double_click", "right_click", "triple_click", "middle_click"})


# ---------------------------------------------------------------------------------------------
# Rules on plain values


def point_in_box(point: Point, box: Box) -> bool:
    """Return whether the point lies inside the box, edges included (within FLOAT_SLACK)."""
    x, y = point
    left, top, width, height = box
    return (
        left - FLOAT_SLACK <= x <= left + width + FLOAT_SLACK
        and top - FLOAT_SLACK <= y <= top + height + FLOAT_SLACK
    )


def distance_score(distance: float) -> float:
    """Score a miss by `distance` screen fractions: 1 within the tolerance, then exponential decay."""
    if distance <= COORDINATE_TOLERANCE + FLOAT_SLACK:
        return 1.0
    return math.exp(-DISTANCE_DECAY * (distance - COORDINATE_TOLERANCE))


def point_score(predicted: Point, target: Point, boxes: Sequence[Box] = ()) -> float:
    """Score a predicted point: 1 inside any target box, else by its distance to the target point."""
    if any(point_in_box(predicted, box) for box in boxes):
        return 1.0
    return distance_score(math.dist(predicted, target))


def edit_distance(left: str, right: str) -> int:
    """Return the Levenshtein distance (insertions, deletions and substitutions cost 1)."""
    if len(left) < len(right):
        left, right = right, left
    previous = list(range(len(right) + 1))
    for i, left_char in enumerate(left, start=1):
        current = [i]
        for j, right_char in enumerate(right, start=1):
            current.append(min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (left_char != right_char),
            ))
        previous = current
    return previous[-1]


def write_score(predicted: str, target: str) -> float:
    """Score typed text by edit similarity, with the newline factor and the 0.8 threshold.

    The newline test looks at the text before stripping, so "abc\\n" and "abc" differ only
    by it. Two texts that are both empty after stripping have similarity 1.
    """
    newline_mismatch = predicted.endswith("\n") != target.endswith("\n")
    predicted_text = predicted.lower().strip()
    target_text = target.lower().strip()
    longest = max(len(predicted_text), len(target_text))
    if longest == 0:
        similarity = 1.0
    else:
        similarity = 1.0 - edit_distance(predicted_text, target_text) / longest
    if newline_mismatch:
        similarity *= NEWLINE_MISMATCH_FACTOR
    if similarity >= WRITE_SIMILARITY_THRESHOLD:
        return 1.0
    return similarity / WRITE_SIMILARITY_THRESHOLD


def keys_score(predicted: Iterable[str], target: Iterable[str]) -> float:
    """Return 1 when both sides name the same set of keys, ignoring case and order, else 0."""
    return float({key.lower() for key in predicted} == {key.lower() for key in target})


def status_score(predicted: str, target: str) -> float:
    """Return 1 when the done() statuses match, else 0."""
    return float(predicted.strip().lower() == target.strip().lower())


def scroll_amount_score(predicted_direction: str, predicted_amount: int, target_direction: str, target_amount: int) -> float:
    """Return 0 for the wrong direction, else the ratio of the smaller to the larger amount."""
    if predicted_direction != target_direction:
        return 0.0
    larger = max(predicted_amount, target_amount)
    if larger == 0:
        return 1.0
    return min(predicted_amount, target_amount) / larger


def android_control_correct(predicted: Point, target: Point) -> bool:
    """Return whether a click lands within ANDROID_CONTROL_RADIUS (Euclidean, screen fractions)."""
    return math.dist(predicted, target) <= ANDROID_CONTROL_RADIUS + FLOAT_SLACK


# ---------------------------------------------------------------------------------------------
# Rules on actions


@dataclass(frozen=True)
class TargetAction:
    """A ground-truth action with the boxes of the elements it targets.

    `boxes` are for the action's point (x, y); `to_boxes` for a drag's end point. Recordings
    without boxes (Holdfast's own, OSWorld) leave both empty, so points score by distance only.
    `point` and `to_point` keep the recorded coordinates when they have more decimals than a
    Holdfast action keeps (3), so distances are measured to the recorded point.
    """

    action: Action
    boxes: tuple[Box, ...] = ()
    to_boxes: tuple[Box, ...] = ()
    point: Point | None = None
    to_point: Point | None = None

    def target_point(self) -> Point:
        return self.point if self.point is not None else (self.action.x, self.action.y)

    def target_to_point(self) -> Point:
        return self.to_point if self.to_point is not None else (self.action.to_x, self.action.to_y)


def action_type(action: Action) -> str:
    """Return the scoring type of an action; a Click with two left clicks is a double_click."""
    if isinstance(action, Click):
        special = {("left", 1): "click", ("left", 2): "double_click", ("left", 3): "triple_click",
                   ("right", 1): "right_click", ("middle", 1): "middle_click"}
        return special.get((action.button, action.clicks), f"click_{action.button}_{action.clicks}")
    return action.kind


def merge_type_enter(actions: Sequence[TargetAction]) -> list[TargetAction]:
    """Merge each typed text followed by a press of Enter alone into one text ending with a newline."""
    merged: list[TargetAction] = []
    index = 0
    while index < len(actions):
        current = actions[index].action
        following = actions[index + 1].action if index + 1 < len(actions) else None
        if (
            isinstance(current, Type)
            and isinstance(following, Key)
            and len(following.keys) == 1
            and following.keys[0].lower() in ENTER_KEYS
        ):
            merged.append(TargetAction(Type(text=current.text + "\n")))
            index += 2
            continue
        merged.append(actions[index])
        index += 1
    return merged


def action_score(predicted: Action, target: TargetAction) -> float:
    """Score one predicted action against one ground-truth action of any type."""
    truth = target.action
    if action_type(predicted) != action_type(truth):
        return 0.0
    match predicted, truth:
        case (Click() | DoubleClick() | RightClick() | Move(), _):
            return point_score((predicted.x, predicted.y), target.target_point(), target.boxes)
        case (Drag(), Drag()):
            start = point_score((predicted.x, predicted.y), target.target_point(), target.boxes)
            end = point_score((predicted.to_x, predicted.to_y), target.target_to_point(), target.to_boxes)
            return (start + end) / 2
        case (Scroll(), Scroll()):
            position = point_score((predicted.x, predicted.y), target.target_point(), target.boxes)
            wheel = scroll_amount_score(predicted.direction, predicted.amount, truth.direction, truth.amount)
            return (position + wheel) / 2
        case (Type(), Type()):
            return write_score(predicted.text, truth.text)
        case (Key(), Key()):
            return keys_score(predicted.keys, truth.keys)
        case (Done(), Done()):
            return status_score(predicted.status, truth.status)
        case (Wait(), Wait()):
            return 1.0
    raise TypeError(f"no scoring rule for {predicted!r} against {truth!r}")


@dataclass
class StepScore:
    """The score of one step and its parts.

    `action_scores` contains (type, score) per ground-truth action after the Enter merge, already
    scaled for extra predicted actions. `android_control` contains, per ground-truth click, whether
    the aligned prediction is a click of the same type within ANDROID_CONTROL_RADIUS.
    """

    score: float
    action_scores: list[tuple[str, float]] = field(default_factory=list)
    android_control: list[bool] = field(default_factory=list)


def score_step(predicted: Sequence[Action], truth: Sequence[TargetAction]) -> StepScore:
    """Score a step's predicted actions against its ground truth (rules in the module docstring)."""
    targets = merge_type_enter(truth)
    predictions = [target.action for target in merge_type_enter([TargetAction(action) for action in predicted])]
    if not targets:
        raise ValueError("a step needs at least one ground-truth action")

    android_control = [
        index < len(predictions)
        and action_type(predictions[index]) == action_type(target.action)
        and android_control_correct((predictions[index].x, predictions[index].y), target.target_point())
        for index, target in enumerate(targets)
        if action_type(target.action) in CLICK_TYPES
    ]
    target_types = [action_type(target.action) for target in targets]
    if not predictions or action_type(predictions[0]) not in target_types:
        return StepScore(0.0, [(kind, 0.0) for kind in target_types], android_control)

    extra_action_factor = min(1.0, len(targets) / len(predictions))
    action_scores = [
        (kind, extra_action_factor * (action_score(predictions[index], target) if index < len(predictions) else 0.0))
        for index, (kind, target) in enumerate(zip(target_types, targets))
    ]
    per_type: dict[str, list[float]] = defaultdict(list)
    for kind, score in action_scores:
        per_type[kind].append(score)
    score = statistics.fmean(statistics.fmean(scores) for scores in per_type.values())
    return StepScore(score, action_scores, android_control)


# ---------------------------------------------------------------------------------------------
# Aggregation over a run


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(ordered),
        "p50": ordered[(len(ordered) - 1) // 2],
        "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def aggregate(records: Sequence[dict]) -> dict:
    """Aggregate step records (the lines of steps.jsonl) into the run's metrics.

    Each record needs `trajectory_id`, `score`, `action_scores` (a list of {type, score}),
    `android_control` (a list of booleans), `latency_s` (None when unknown) and `state_bytes`.
    Step scores are pooled over all steps. The episode success rate is over trajectories, and
    a trajectory succeeds when every one of its steps scores 1. The p50 and p95 are the
    nearest-rank percentiles.
    """
    by_trajectory: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_trajectory[record["trajectory_id"]].append(record)

    scores = [record["score"] for record in records]
    per_type: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for item in record["action_scores"]:
            per_type[item["type"]].append(item["score"])
    clicks = [correct for record in records for correct in record["android_control"]]
    latencies = [record["latency_s"] for record in records if record.get("latency_s") is not None]
    state_sizes = [float(record["state_bytes"]) for record in records if record.get("state_bytes") is not None]

    per_trajectory = {}
    for trajectory_id, steps in by_trajectory.items():
        step_scores = [step["score"] for step in steps]
        step_latencies = [step["latency_s"] for step in steps if step.get("latency_s") is not None]
        per_trajectory[trajectory_id] = {
            "steps": len(steps),
            "step_score_mean": statistics.fmean(step_scores),
            "step_success_rate": _success_rate(step_scores),
            "episode_success": all(score >= 1.0 for score in step_scores),
            "latency_s_mean": statistics.fmean(step_latencies) if step_latencies else None,
            "state_bytes_max": max((step.get("state_bytes") or 0) for step in steps),
        }

    return {
        "trajectories": len(by_trajectory),
        "steps": len(records),
        "step_score_mean": statistics.fmean(scores) if scores else None,
        "step_success_rate": _success_rate(scores) if scores else None,
        "episode_success_rate": (
            statistics.fmean(float(item["episode_success"]) for item in per_trajectory.values())
            if per_trajectory else None
        ),
        "android_control_click_accuracy": statistics.fmean(map(float, clicks)) if clicks else None,
        "android_control_clicks": len(clicks),
        "per_action_type": {
            kind: {"count": len(values), "score_mean": statistics.fmean(values), "success_rate": _success_rate(values)}
            for kind, values in sorted(per_type.items())
        },
        "per_trajectory": per_trajectory,
        "latency_s": _summary(latencies),
        "state_bytes": _summary(state_sizes),
    }


def _success_rate(scores: Sequence[float]) -> float:
    return statistics.fmean(float(score >= 1.0) for score in scores)
