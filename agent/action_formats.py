"""Action text formats: how a model writes the agent's actions, each parsed into `agent.actions`.

Holotron-12B's own action format is not published, so the format is a setting. Three are built in:

- `holdfast`: Holdfast's compact form, `click(0.512,0.300)` (coordinates 0..1, see `agent.actions`);
- `pyautogui`: pyautogui calls with coordinates as fractions 0..1 of the screen, the form of
  AgentNet and OSWorld recordings, `pyautogui.click(x=0.512, y=0.3)`;
- `json`: one JSON object with integer coordinates 0..1000, H Company's convention for its
  other agents, `{"action": "click", "x": 512, "y": 300}`.

Every format maps to the same closed action space, so the executor, the trajectory files and
the evaluator never see a format. To add one, write a parser (text -> Action, raising
ActionParseError) and a formatter (Action -> text), then register them:

    from agent.action_formats import ActionFormat, register_action_format

    register_action_format(ActionFormat(
        name="mine", prompt="Answer with one action as ...", parse=parse_mine, format=format_mine,
    ))

after which `--action-format mine` (or `"action_format": "mine"` in a model folder's
holdfast.json) selects it. The formatter is used to feed recorded actions back to the model in
its own form (teacher forcing), so `parse(format(a))` should return an action equal to `a`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from agent.actions import (
    Action,
    ActionParseError,
    Click,
    Done,
    DoubleClick,
    Drag,
    Key,
    Move,
    RightClick,
    Scroll,
    Type,
    Wait,
    action_from_dict,
    format_action,
    parse_action,
    parse_pyautogui,
)

# Integer coordinates of the JSON format: 0..JSON_COORDINATE_SCALE from the top-left corner. With
# 3-decimal fractions in the action models, integers in 0..1000 convert both ways exactly.
JSON_COORDINATE_SCALE = 1000


@dataclass(frozen=True)
class ActionFormat:
    """One action text format: its name, the prompt that teaches it, its parser and formatter."""

    name: str
    prompt: str  # put before the task instruction; describes the format to the model
    parse: Callable[[str], Action]  # raises ActionParseError on text that is not one action
    format: Callable[[Action], str]


_FORMATS: dict[str, ActionFormat] = {}


def register_action_format(action_format: ActionFormat, replace: bool = False) -> None:
    """Make a format selectable by name; raise ValueError if the name is taken (unless replace)."""
    if action_format.name in _FORMATS and not replace:
        raise ValueError(f"action format {action_format.name!r} is already registered; pass replace=True to override it")
    _FORMATS[action_format.name] = action_format


def action_format_names() -> list[str]:
    return sorted(_FORMATS)


def get_action_format(name: str) -> ActionFormat:
    if name not in _FORMATS:
        raise ValueError(f"unknown action format {name!r}; choose one of {', '.join(action_format_names())}")
    return _FORMATS[name]


# ---------------------------------------------------------------------------------------------
# holdfast: the compact form of agent.actions


HOLDFAST_PROMPT = """\
You control a computer with mouse and keyboard. After each screenshot, answer with exactly one action.
Coordinates are fractions of the screen from the top-left corner, 0 to 1 with 3 decimals.
Actions:
click(X,Y)  click(X,Y,BUTTON,CLICKS)  double_click(X,Y)  right_click(X,Y)  move(X,Y)
drag(X,Y,TO_X,TO_Y)  scroll(X,Y,DIRECTION,AMOUNT)  type("TEXT")  key("K")  key("K1","K2")
wait(SECONDS)  done(success)  done(failure)  done(success,"ANSWER")
Example: click(0.512,0.300)"""


def _parse_holdfast(text: str) -> Action:
    return parse_action(text.strip())


# ---------------------------------------------------------------------------------------------
# pyautogui: calls with coordinates 0..1, as in AgentNet and OSWorld recordings


PYAUTOGUI_PROMPT = """\
You control a computer with mouse and keyboard. After each screenshot, answer with one action as
pyautogui code. Coordinates are fractions of the screen from the top-left corner, 0 to 1.
Calls: pyautogui.click(x=X, y=Y), pyautogui.doubleClick(x=X, y=Y), pyautogui.rightClick(x=X, y=Y),
pyautogui.moveTo(x=X, y=Y), pyautogui.moveTo then pyautogui.dragTo(x=X, y=Y) for a drag,
pyautogui.scroll(CLICKS, x=X, y=Y) (positive scrolls up), pyautogui.write('TEXT'),
pyautogui.press('KEY'), pyautogui.hotkey('K1', 'K2'), computer.wait(SECONDS),
computer.terminate(status='success' or 'failure', answer='ANSWER').
Example: pyautogui.click(x=0.512, y=0.3)"""

_CODE_FENCE = re.compile(r"```(?:python|py)?\s*\n?(.*?)```", re.DOTALL)


def _parse_pyautogui(text: str) -> Action:
    # Models often wrap code in a fenced block after some prose; the last block is the action.
    blocks = _CODE_FENCE.findall(text)
    code = blocks[-1] if blocks else text
    actions = parse_pyautogui(code.strip())
    if len(actions) != 1:
        raise ActionParseError(text, f"expected one action per step, got {len(actions)}: {[a.kind for a in actions]}")
    return actions[0]


def _point_arguments(x: float, y: float) -> str:
    return f"x={x:g}, y={y:g}"


def _format_pyautogui(action: Action) -> str:
    """Return pyautogui code that `_parse_pyautogui` reads back as an equal action.

    pyautogui has no separate double or right click for the general Click, so Click(left, 2)
    reads back as DoubleClick and Click(right, 1) as RightClick: the same effect on screen.
    """
    match action:
        case Click(x=x, y=y, button="left", clicks=1):
            return f"pyautogui.click({_point_arguments(x, y)})"
        case Click(x=x, y=y, button=button, clicks=clicks):
            return f"pyautogui.click({_point_arguments(x, y)}, clicks={clicks}, button={button!r})"
        case DoubleClick(x=x, y=y):
            return f"pyautogui.doubleClick({_point_arguments(x, y)})"
        case RightClick(x=x, y=y):
            return f"pyautogui.rightClick({_point_arguments(x, y)})"
        case Move(x=x, y=y):
            return f"pyautogui.moveTo({_point_arguments(x, y)})"
        case Drag(x=x, y=y, to_x=to_x, to_y=to_y):
            return f"pyautogui.moveTo({_point_arguments(x, y)})\npyautogui.dragTo({_point_arguments(to_x, to_y)})"
        case Scroll(x=x, y=y, amount=amount, direction=direction):
            function = "hscroll" if direction in ("left", "right") else "scroll"
            clicks = amount if direction in ("up", "right") else -amount
            return f"pyautogui.{function}({clicks}, {_point_arguments(x, y)})"
        case Type(text=text):
            return f"pyautogui.write({text!r})"
        case Key(keys=[key]):
            return f"pyautogui.press({key!r})"
        case Key(keys=keys):
            return "pyautogui.hotkey(" + ", ".join(repr(key) for key in keys) + ")"
        case Wait(seconds=seconds):
            return f"computer.wait({seconds:g})"
        case Done(status=status, answer=None):
            return f"computer.terminate(status={status!r})"
        case Done(status=status, answer=answer):
            return f"computer.terminate(status={status!r}, answer={answer!r})"
    raise TypeError(f"not an action: {action!r}")


# ---------------------------------------------------------------------------------------------
# json: one object with integer coordinates 0..1000


JSON_PROMPT = """\
You control a computer with mouse and keyboard. After each screenshot, answer with one action as
a JSON object. Coordinates are integers from 0 to 1000 across the screen, from the top-left corner.
{"action": "click", "x": X, "y": Y} (optional "button": "left"|"right"|"middle", "clicks": 1-3)
{"action": "double_click", "x": X, "y": Y}   {"action": "right_click", "x": X, "y": Y}
{"action": "move", "x": X, "y": Y}   {"action": "drag", "x": X, "y": Y, "to_x": X2, "to_y": Y2}
{"action": "scroll", "x": X, "y": Y, "direction": "up"|"down"|"left"|"right", "amount": N}
{"action": "type", "text": "TEXT"}   {"action": "key", "keys": ["ctrl", "c"]}
{"action": "wait", "seconds": S}   {"action": "done", "status": "success"|"failure", "answer": "ANSWER"}
Example: {"action": "click", "x": 512, "y": 300}"""

_JSON_POINTS = {"x": "x", "y": "y", "to_x": "to_x", "to_y": "to_y"}
_JSON_MODELS = {
    "click": Click, "double_click": DoubleClick, "right_click": RightClick, "move": Move, "drag": Drag,
    "scroll": Scroll, "type": Type, "key": Key, "wait": Wait, "done": Done,
}


def _first_json_object(text: str) -> dict[str, Any]:
    """Decode the first JSON object in text; models may write prose or a code fence around it."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ActionParseError(text, 'expected a JSON object such as {"action": "click", "x": 512, "y": 300}')


def _json_coordinate(text: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ActionParseError(text, f"{key} must be an integer from 0 to {JSON_COORDINATE_SCALE}, got {value!r}")
    if not 0 <= value <= JSON_COORDINATE_SCALE:
        raise ActionParseError(text, f"{key}={value} is outside 0..{JSON_COORDINATE_SCALE}")
    return value / JSON_COORDINATE_SCALE


def _parse_json(text: str) -> Action:
    data = _first_json_object(text)
    kind = data.get("action")
    if kind not in _JSON_MODELS:
        raise ActionParseError(text, f"unknown action {kind!r}; expected one of {', '.join(_JSON_MODELS)}")
    fields = {key: value for key, value in data.items() if key != "action"}
    for key in _JSON_POINTS:
        if key in fields:
            fields[key] = _json_coordinate(text, key, fields[key])
    if kind == "key" and "key" in fields and "keys" not in fields:
        fields["keys"] = [fields.pop("key")]  # a single key written as "key": "enter"
    if kind == "key" and isinstance(fields.get("keys"), str):
        fields["keys"] = [fields["keys"]]
    try:
        return action_from_dict({"kind": kind, **fields})
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(str(part) for part in item['loc'][1:]) or kind}: {item['msg']}" for item in error.errors())
        raise ActionParseError(text, details) from error


def _format_json(action: Action) -> str:
    data: dict[str, Any] = {"action": action.kind}
    for key, value in action.model_dump(exclude={"kind"}).items():
        if key in _JSON_POINTS:
            data[key] = round(value * JSON_COORDINATE_SCALE)
        elif value is not None:
            data[key] = value
    if isinstance(action, Click) and action.button == "left" and action.clicks == 1:
        del data["button"], data["clicks"]
    return json.dumps(data, ensure_ascii=False)


register_action_format(ActionFormat("holdfast", HOLDFAST_PROMPT, _parse_holdfast, format_action))
register_action_format(ActionFormat("pyautogui", PYAUTOGUI_PROMPT, _parse_pyautogui, _format_pyautogui))
register_action_format(ActionFormat("json", JSON_PROMPT, _parse_json, _format_json))
