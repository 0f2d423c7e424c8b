"""The closed action space of the desktop agent, its compact text form and its parsers.

Coordinates are fractions of the screen (0..1 from the top-left corner), as in AgentNet and
OSWorld recordings; `agent.screen.ScreenGeometry.to_pixels` turns them into pixels. Every
coordinate is rounded to `COORDINATE_DECIMALS` when a model is built, so the text form below
and the models are exact inverses: `parse_action(format_action(a)) == a` for every action, and
`format_action(parse_action(s)) == s` for every string that `format_action` produced.

Compact text grammar (what the model reads and writes; X, Y in 0..1 with 3 decimals):

    click(X,Y)                   left button, one click
    click(X,Y,BUTTON,CLICKS)     BUTTON is left, right or middle; CLICKS is 1..3
    double_click(X,Y)
    right_click(X,Y)
    move(X,Y)
    drag(X,Y,TO_X,TO_Y)          left button held from (X,Y) to (TO_X,TO_Y)
    scroll(X,Y,DIRECTION,AMOUNT) DIRECTION is up, down, left or right; AMOUNT is wheel clicks
    type("TEXT")                 TEXT is a JSON string literal (backslash escapes)
    key("K")                     press one key (pyautogui key names)
    key("K1","K2",...)           hotkey: hold the keys in order, release in reverse
    wait(S)                      S seconds with 1 decimal
    done(STATUS)                 STATUS is success or failure
    done(STATUS,"ANSWER")        with an answer for question-answering tasks

The canonical form has no spaces. The parser also accepts spaces after commas and quoted
enum words (`click(0.1, 0.2, "right", 1)`), but only the canonical form round-trips.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

COORDINATE_DECIMALS = 3
WAIT_DECIMALS = 1
# Limits on one action. Longer waits and bigger scrolls are split into several steps, which
# keeps each step's effect small enough to check on the next screenshot.
MAX_WAIT_SECONDS = 60.0
MAX_SCROLL_AMOUNT = 50
MAX_CLICKS = 3

Button = Literal["left", "right", "middle"]
ScrollDirection = Literal["up", "down", "left", "right"]
DoneStatus = Literal["success", "failure"]


class ActionParseError(ValueError):
    """Text that is not a valid action; `text` is the offending input, `reason` what is wrong."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid action {text!r}: {reason}")
        self.text = text
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Key names


@functools.lru_cache(maxsize=1)
def keyboard_keys() -> frozenset[str]:
    """Return pyautogui's KEYBOARD_KEYS, read from its source so that pyautogui is not imported.

    Importing pyautogui opens the X display at once, which would make this module unusable on a
    machine without a display (offline evaluation, CI).
    """
    spec = importlib.util.find_spec("pyautogui")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyautogui is not installed; install the project with `pip install -e .`")
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id in ("KEY_NAMES", "KEYBOARD_KEYS")
            for target in node.targets
        ):
            if isinstance(node.value, ast.List):
                return frozenset(ast.literal_eval(node.value))
    raise RuntimeError(f"no KEY_NAMES list found in {spec.origin}; this pyautogui version is not supported")


def _normalise_key(name: str) -> str:
    # pyautogui lowercases multi-character key names and keeps single characters as they are
    # ('A' types a capital letter), so the same rule makes 'Enter' and 'enter' one action.
    key = name.lower() if len(name) > 1 else name
    # Capital letters are not in KEY_NAMES, but pyautogui's X11 backend presses them with shift.
    is_capital = len(key) == 1 and key.isupper() and key.lower() in keyboard_keys()
    if key not in keyboard_keys() and not is_capital:
        raise ValueError(f"unknown key {name!r}; use a pyautogui key name such as 'enter', 'ctrl', 'a' or 'f5'")
    return key


# ---------------------------------------------------------------------------------------------
# Action models


def _round_coordinate(value: float) -> float:
    return round(value, COORDINATE_DECIMALS)


def _round_seconds(value: float) -> float:
    return round(value, WAIT_DECIMALS)


# A fraction of the screen width or height, rounded so that the text form is exact.
Coordinate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False), AfterValidator(_round_coordinate)]
KeyName = Annotated[str, AfterValidator(_normalise_key)]


class _ActionModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Click(_ActionModel):
    kind: Literal["click"] = "click"
    x: Coordinate
    y: Coordinate
    button: Button = "left"
    clicks: int = Field(default=1, ge=1, le=MAX_CLICKS)


class DoubleClick(_ActionModel):
    kind: Literal["double_click"] = "double_click"
    x: Coordinate
    y: Coordinate


class RightClick(_ActionModel):
    kind: Literal["right_click"] = "right_click"
    x: Coordinate
    y: Coordinate


class Move(_ActionModel):
    kind: Literal["move"] = "move"
    x: Coordinate
    y: Coordinate


class Drag(_ActionModel):
    kind: Literal["drag"] = "drag"
    x: Coordinate
    y: Coordinate
    to_x: Coordinate
    to_y: Coordinate


class Scroll(_ActionModel):
    kind: Literal["scroll"] = "scroll"
    x: Coordinate
    y: Coordinate
    amount: int = Field(ge=1, le=MAX_SCROLL_AMOUNT, description="wheel clicks")
    direction: ScrollDirection = "down"


class Type(_ActionModel):
    kind: Literal["type"] = "type"
    text: str = Field(min_length=1)


class Key(_ActionModel):
    kind: Literal["key"] = "key"
    keys: list[KeyName] = Field(min_length=1, description="one key is a press, several a hotkey")


class Wait(_ActionModel):
    kind: Literal["wait"] = "wait"
    seconds: Annotated[
        float, Field(ge=0.0, le=MAX_WAIT_SECONDS, allow_inf_nan=False), AfterValidator(_round_seconds)
    ]


class Done(_ActionModel):
    kind: Literal["done"] = "done"
    status: DoneStatus = "success"
    answer: str | None = None


Action = Annotated[
    Union[Click, DoubleClick, RightClick, Move, Drag, Scroll, Type, Key, Wait, Done],
    Field(discriminator="kind"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
POINTER_ACTIONS = (Click, DoubleClick, RightClick, Move, Drag, Scroll)


def action_from_dict(data: dict[str, Any]) -> Action:
    """Validate a JSON object with a `kind` field (the form stored in trajectories)."""
    return ACTION_ADAPTER.validate_python(data)


def action_to_dict(action: Action) -> dict[str, Any]:
    return action.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Compact text form


def _coordinate_text(value: float) -> str:
    return f"{value:.{COORDINATE_DECIMALS}f}"


def _string_text(value: str) -> str:
    # JSON escapes are a subset of Python's, so the parser's ast.literal_eval reads them back.
    return json.dumps(value, ensure_ascii=False)


def format_action(action: Action) -> str:
    """Return the canonical compact text of an action (see the module docstring for the grammar)."""
    match action:
        case Click(x=x, y=y, button="left", clicks=1):
            return f"click({_coordinate_text(x)},{_coordinate_text(y)})"
        case Click(x=x, y=y, button=button, clicks=clicks):
            return f"click({_coordinate_text(x)},{_coordinate_text(y)},{button},{clicks})"
        case DoubleClick(x=x, y=y) | RightClick(x=x, y=y) | Move(x=x, y=y):
            return f"{action.kind}({_coordinate_text(x)},{_coordinate_text(y)})"
        case Drag(x=x, y=y, to_x=to_x, to_y=to_y):
            points = ",".join(_coordinate_text(value) for value in (x, y, to_x, to_y))
            return f"drag({points})"
        case Scroll(x=x, y=y, amount=amount, direction=direction):
            return f"scroll({_coordinate_text(x)},{_coordinate_text(y)},{direction},{amount})"
        case Type(text=text):
            return f"type({_string_text(text)})"
        case Key(keys=keys):
            return "key(" + ",".join(_string_text(key) for key in keys) + ")"
        case Wait(seconds=seconds):
            return f"wait({seconds:.{WAIT_DECIMALS}f})"
        case Done(status=status, answer=None):
            return f"done({status})"
        case Done(status=status, answer=answer):
            return f"done({status},{_string_text(answer)})"
    raise TypeError(f"not an action: {action!r}")


def _parse_call(
    text: str, statement: ast.AST, bare_names: bool
) -> tuple[str, list[Any], dict[str, Any]]:
    """Split one call expression into (dotted function name, positional values, keyword values).

    Arguments must be literals. With bare_names, a name such as `right` is read as the string
    'right', so that enum words in the compact form need no quotes. Nothing is evaluated.
    """
    if not isinstance(statement, ast.Call):
        raise ActionParseError(text, "expected a single call such as click(0.500,0.500)")
    name = _dotted_name(statement.func)
    if name is None:
        raise ActionParseError(text, "the called function must be a plain or dotted name")
    positional = [_literal(text, node, bare_names) for node in statement.args]
    keywords: dict[str, Any] = {}
    for keyword in statement.keywords:
        if keyword.arg is None:
            raise ActionParseError(text, "**kwargs is not supported")
        keywords[keyword.arg] = _literal(text, keyword.value, bare_names)
    return name, positional, keywords


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        prefix = _dotted_name(node.value)
        return None if prefix is None else f"{prefix}.{node.attr}"
    return None


def _literal(text: str, node: ast.AST, bare_names: bool) -> Any:
    if bare_names and isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Starred):
        raise ActionParseError(text, "*args is not supported")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise ActionParseError(text, f"argument {ast.unparse(node)!r} is not a literal") from error


def _parse_expression(text: str) -> ast.AST:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ActionParseError(text, f"syntax error: {error.msg}") from error
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes, absurd nesting
        raise ActionParseError(text, str(error) or type(error).__name__) from error


def _build(source: str, model: type[_ActionModel], **fields: Any) -> Action:
    try:
        return model(**fields)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or model.__name__}: {item['msg']}"
            for item in error.errors()
        )
        raise ActionParseError(source, details) from error


def _expect_arity(text: str, name: str, values: list[Any], allowed: tuple[int, ...]) -> None:
    if len(values) not in allowed:
        counts = " or ".join(str(count) for count in allowed)
        raise ActionParseError(text, f"{name}() takes {counts} arguments, got {len(values)}")


def _number(text: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActionParseError(text, f"{what} must be a number, got {value!r}")
    return float(value)


def parse_action(text: str) -> Action:
    """Parse one action in the compact text form; raise ActionParseError naming what is wrong."""
    if not isinstance(text, str):
        raise ActionParseError(repr(text), "expected a string")
    name, values, keywords = _parse_call(text, _parse_expression(text), bare_names=True)
    if keywords:
        raise ActionParseError(text, f"the compact form takes no keyword arguments, got {sorted(keywords)}")
    pointer_models = {"double_click": DoubleClick, "right_click": RightClick, "move": Move}

    if name == "click":
        _expect_arity(text, name, values, (2, 4))
        x, y = (_number(text, value, "coordinate") for value in values[:2])
        if len(values) == 2:
            return _build(text, Click, x=x, y=y)
        clicks = values[3]
        if isinstance(clicks, bool) or not isinstance(clicks, int):
            raise ActionParseError(text, f"clicks must be an integer, got {clicks!r}")
        return _build(text, Click, x=x, y=y, button=values[2], clicks=clicks)
    if name in pointer_models:
        _expect_arity(text, name, values, (2,))
        x, y = (_number(text, value, "coordinate") for value in values)
        return _build(text, pointer_models[name], x=x, y=y)
    if name == "drag":
        _expect_arity(text, name, values, (4,))
        x, y, to_x, to_y = (_number(text, value, "coordinate") for value in values)
        return _build(text, Drag, x=x, y=y, to_x=to_x, to_y=to_y)
    if name == "scroll":
        _expect_arity(text, name, values, (4,))
        x, y = (_number(text, value, "coordinate") for value in values[:2])
        amount = values[3]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ActionParseError(text, f"scroll amount must be an integer, got {amount!r}")
        return _build(text, Scroll, x=x, y=y, direction=values[2], amount=amount)
    if name == "type":
        _expect_arity(text, name, values, (1,))
        if not isinstance(values[0], str):
            raise ActionParseError(text, f"type() takes a string, got {values[0]!r}")
        return _build(text, Type, text=values[0])
    if name == "key":
        if not values or not all(isinstance(value, str) for value in values):
            raise ActionParseError(text, 'key() takes one or more quoted key names, e.g. key("ctrl","c")')
        return _build(text, Key, keys=values)
    if name == "wait":
        _expect_arity(text, name, values, (1,))
        return _build(text, Wait, seconds=_number(text, values[0], "seconds"))
    if name == "done":
        _expect_arity(text, name, values, (1, 2))
        answer = values[1] if len(values) == 2 else None
        if answer is not None and not isinstance(answer, str):
            raise ActionParseError(text, f"the answer must be a string, got {answer!r}")
        return _build(text, Done, status=values[0], answer=answer)
    known = "click, double_click, right_click, move, drag, scroll, type, key, wait, done"
    raise ActionParseError(text, f"unknown action {name!r}; expected one of {known}")


# ---------------------------------------------------------------------------------------------
# pyautogui-style recordings


class _PyautoguiReader:
    """Turns the statements of one recorded step into actions, tracking the pointer position.

    Recorded steps often move first and then act without coordinates (`moveTo` then `scroll(-3)`,
    or `moveTo` then `dragTo`), so a `moveTo` is held back and merged into the next action that
    acts at the pointer; if none does, it becomes a Move of its own.
    """

    def __init__(self, code: str) -> None:
        self.code = code
        self.actions: list[Action] = []
        self.position: tuple[float, float] | None = None
        self.pending_move: Move | None = None

    def flush_move(self) -> None:
        if self.pending_move is not None:
            self.actions.append(self.pending_move)
            self.pending_move = None

    def emit(self, action: Action) -> None:
        self.flush_move()
        self.actions.append(action)

    def point(self, values: list[Any], keywords: dict[str, Any], x_index: int = 0) -> tuple[float, float]:
        """Return the call's (x, y), or the pointer position when the call gives none."""
        x = keywords.get("x", values[x_index] if len(values) > x_index else None)
        y = keywords.get("y", values[x_index + 1] if len(values) > x_index + 1 else None)
        if isinstance(x, (tuple, list)) and y is None and len(x) == 2:
            x, y = x
        if x is None and y is None:
            if self.position is None:
                raise ActionParseError(self.code, "a call without coordinates needs an earlier moveTo or click")
            # The held-back moveTo is consumed: this action happens at its point.
            self.pending_move = None
            return self.position
        if x is None or y is None:
            raise ActionParseError(self.code, f"both x and y are needed, got x={x!r}, y={y!r}")
        self.flush_move()
        return _number(self.code, x, "x"), _number(self.code, y, "y")

    def read(self, name: str, values: list[Any], keywords: dict[str, Any]) -> None:
        function = name.rsplit(".", 1)[-1]
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if module not in ("", "pyautogui", "computer", "time"):
            raise ActionParseError(self.code, f"unsupported call {name!r}")
        handler = getattr(self, f"read_{function}", None)
        if handler is None:
            raise ActionParseError(self.code, f"unsupported call {name!r}")
        handler(values, keywords)

    # Pointer calls ------------------------------------------------------------------------

    def read_click(self, values: list[Any], keywords: dict[str, Any], clicks: int = 1) -> None:
        x, y = self.point(values, keywords)
        clicks = keywords.get("clicks", values[2] if len(values) > 2 else clicks)
        button = keywords.get("button", values[4] if len(values) > 4 else "left")
        button = {"primary": "left", "secondary": "right"}.get(button, button)
        if button == "left" and clicks == 2:
            self.emit(_build(self.code, DoubleClick, x=x, y=y))
        elif button == "right" and clicks == 1:
            self.emit(_build(self.code, RightClick, x=x, y=y))
        else:
            self.emit(_build(self.code, Click, x=x, y=y, button=button, clicks=clicks))
        self.position = (x, y)

    def read_doubleClick(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self.read_click(values[:2], {**keywords, "clicks": 2})

    def read_tripleClick(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self.read_click(values[:2], {**keywords, "clicks": 3})

    def read_rightClick(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self.read_click(values[:2], {**keywords, "button": "right"})

    def read_middleClick(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self.read_click(values[:2], {**keywords, "button": "middle"})

    def read_moveTo(self, values: list[Any], keywords: dict[str, Any]) -> None:
        x, y = self.point(values, keywords)
        self.pending_move = _build(self.code, Move, x=x, y=y)
        self.position = (x, y)

    def read_dragTo(self, values: list[Any], keywords: dict[str, Any]) -> None:
        if self.position is None:
            raise ActionParseError(self.code, "dragTo needs an earlier moveTo or click for its start point")
        start = self.position
        self.pending_move = None  # the moveTo only placed the start of the drag
        to_x, to_y = self.point(values, keywords)
        button = keywords.get("button", "left")
        if button not in ("left", "primary"):
            raise ActionParseError(self.code, f"only left-button drags are supported, got button={button!r}")
        self.emit(_build(self.code, Drag, x=start[0], y=start[1], to_x=to_x, to_y=to_y))
        self.position = (to_x, to_y)

    def _read_wheel(self, values: list[Any], keywords: dict[str, Any], horizontal: bool) -> None:
        clicks = keywords.get("clicks", values[0] if values else None)
        if isinstance(clicks, bool) or not isinstance(clicks, (int, float)) or int(clicks) == 0:
            raise ActionParseError(self.code, f"scroll needs a non-zero number of clicks, got {clicks!r}")
        x, y = self.point(values, keywords, x_index=1)
        # pyautogui's sign convention: positive scrolls up (or right for hscroll).
        if horizontal:
            direction = "right" if clicks > 0 else "left"
        else:
            direction = "up" if clicks > 0 else "down"
        self.emit(_build(self.code, Scroll, x=x, y=y, amount=abs(int(clicks)), direction=direction))
        self.position = (x, y)

    def read_scroll(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self._read_wheel(values, keywords, horizontal=False)

    read_vscroll = read_scroll

    def read_hscroll(self, values: list[Any], keywords: dict[str, Any]) -> None:
        self._read_wheel(values, keywords, horizontal=True)

    # Keyboard calls -----------------------------------------------------------------------

    def read_write(self, values: list[Any], keywords: dict[str, Any]) -> None:
        message = keywords.get("message", values[0] if values else None)
        if isinstance(message, (list, tuple)):
            # typewrite(['a', 'enter']) presses key names one after another.
            for key in message:
                self.emit(_build(self.code, Key, keys=[key]))
            return
        if not isinstance(message, str):
            raise ActionParseError(self.code, f"write() needs a message string, got {message!r}")
        self.emit(_build(self.code, Type, text=message))

    read_typewrite = read_write

    def read_press(self, values: list[Any], keywords: dict[str, Any]) -> None:
        keys = keywords.get("keys", values[0] if values else None)
        presses = keywords.get("presses", values[1] if len(values) > 1 else 1)
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, (list, tuple)) or not keys:
            raise ActionParseError(self.code, f"press() needs a key name or a list of them, got {keys!r}")
        if isinstance(presses, bool) or not isinstance(presses, int) or presses < 1:
            raise ActionParseError(self.code, f"presses must be a positive integer, got {presses!r}")
        for _ in range(presses):
            for key in keys:
                self.emit(_build(self.code, Key, keys=[key]))

    def read_hotkey(self, values: list[Any], keywords: dict[str, Any]) -> None:
        keys = keywords.get("keys", values)
        if isinstance(keys, str):
            keys = [keys]
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            keys = values[0]
        self.emit(_build(self.code, Key, keys=list(keys)))

    # Control calls ------------------------------------------------------------------------

    def read_terminate(self, values: list[Any], keywords: dict[str, Any]) -> None:
        status = keywords.get("status", values[0] if values else "success")
        answer = keywords.get("answer", values[1] if len(values) > 1 else None)
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        self.emit(_build(self.code, Done, status=status, answer=answer))

    def read_wait(self, values: list[Any], keywords: dict[str, Any]) -> None:
        seconds = keywords.get("seconds", values[0] if values else 1.0)
        self.emit(_build(self.code, Wait, seconds=_number(self.code, seconds, "seconds")))

    read_sleep = read_wait


def parse_pyautogui(code: str) -> list[Action]:
    """Parse the pyautogui-style code of one recorded step into actions, in order.

    Reads `pyautogui.click/doubleClick/tripleClick/rightClick/middleClick/moveTo/dragTo/scroll/
    hscroll/write/typewrite/press/hotkey`, `computer.terminate(status=..., answer=...)`,
    `computer.wait(seconds)` and `time.sleep(s)`; coordinates must already be fractions of the
    screen. Import lines and comments are skipped. Raises ActionParseError on anything else.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise ActionParseError(code, f"syntax error on line {error.lineno}: {error.msg}") from error
    except (ValueError, RecursionError, MemoryError) as error:
        raise ActionParseError(code, str(error) or type(error).__name__) from error

    reader = _PyautoguiReader(code)
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if not isinstance(statement, ast.Expr):
            raise ActionParseError(code, f"line {statement.lineno}: only calls are supported")
        name, values, keywords = _parse_call(code, statement.value, bare_names=False)
        reader.read(name, values, keywords)
    reader.flush_move()
    if not reader.actions:
        raise ActionParseError(code, "no action found")
    return reader.actions
