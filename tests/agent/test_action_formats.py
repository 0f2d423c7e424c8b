"""The three action text formats: parsing, formatting, round trips and the registry."""

from __future__ import annotations

import re

import pytest

from agent.action_formats import (
    ActionFormat,
    action_format_names,
    get_action_format,
    register_action_format,
)
from agent.actions import (
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
)

# Actions every format must carry unchanged through format -> parse.
ROUND_TRIP_ACTIONS = [
    Click(x=0.512, y=0.3),
    Click(x=0.0, y=1.0, button="middle", clicks=1),
    Click(x=0.25, y=0.75, button="left", clicks=3),
    DoubleClick(x=0.1, y=0.2),
    RightClick(x=0.9, y=0.05),
    Move(x=0.333, y=0.667),
    Drag(x=0.1, y=0.1, to_x=0.8, to_y=0.9),
    Scroll(x=0.5, y=0.5, amount=3, direction="down"),
    Scroll(x=0.5, y=0.5, amount=2, direction="up"),
    Scroll(x=0.4, y=0.6, amount=5, direction="left"),
    Scroll(x=0.4, y=0.6, amount=1, direction="right"),
    Type(text='say "hi"\nand \\ leave'),
    Key(keys=["enter"]),
    Key(keys=["ctrl", "shift", "t"]),
    Wait(seconds=1.5),
    Done(status="success"),
    Done(status="failure", answer="42 items"),
]


def test_builtin_formats_registered():
    assert {"holdfast", "pyautogui", "json"} <= set(action_format_names())


@pytest.mark.parametrize("name", ["holdfast", "pyautogui", "json"])
@pytest.mark.parametrize("action", ROUND_TRIP_ACTIONS, ids=lambda action: action.kind)
def test_format_round_trip(name, action):
    action_format = get_action_format(name)
    assert action_format.parse(action_format.format(action)) == action


@pytest.mark.parametrize("name", ["holdfast", "pyautogui", "json"])
def test_prompt_example_parses(name):
    action_format = get_action_format(name)
    example = re.search(r"Example: (.+)", action_format.prompt).group(1)
    assert action_format.parse(example) == Click(x=0.512, y=0.3)


def test_json_coordinates_scaled_from_1000():
    parse = get_action_format("json").parse
    assert parse('{"action": "click", "x": 512, "y": 300}') == Click(x=0.512, y=0.3)
    assert parse('{"action": "drag", "x": 0, "y": 1000, "to_x": 250, "to_y": 5}') == Drag(
        x=0.0, y=1.0, to_x=0.25, to_y=0.005
    )
    assert get_action_format("json").format(Click(x=0.512, y=0.3)) == '{"action": "click", "x": 512, "y": 300}'


def test_json_found_inside_prose():
    parse = get_action_format("json").parse
    text = 'The button is top left. ```json\n{"action": "right_click", "x": 10, "y": 20}\n``` done'
    assert parse(text) == RightClick(x=0.01, y=0.02)
    assert parse('{"action": "key", "key": "enter"}') == Key(keys=["enter"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"action": "click", "x": 1001, "y": 5}', "outside 0..1000"),
        ('{"action": "click", "x": 0.5, "y": 5}', "must be an integer"),
        ('{"action": "fly", "x": 1, "y": 5}', "unknown action 'fly'"),
        ("click there", "expected a JSON object"),
        ('{"action": "scroll", "x": 1, "y": 5, "direction": "down"}', "amount"),
    ],
)
def test_json_errors_name_the_problem(text, message):
    with pytest.raises(ActionParseError, match=re.escape(message)):
        get_action_format("json").parse(text)


def test_pyautogui_reads_code_fence():
    parse = get_action_format("pyautogui").parse
    text = "I will click the field.\n```python\npyautogui.click(x=0.25, y=0.5)\n```"
    assert parse(text) == Click(x=0.25, y=0.5)
    assert parse("pyautogui.scroll(-4, x=0.5, y=0.6)") == Scroll(x=0.5, y=0.6, amount=4, direction="down")
    assert parse("computer.terminate(status='success', answer='ok')") == Done(status="success", answer="ok")


def test_pyautogui_rejects_several_actions():
    with pytest.raises(ActionParseError, match="expected one action per step, got 2"):
        get_action_format("pyautogui").parse("pyautogui.click(x=0.1, y=0.1)\npyautogui.write('a')")


def test_pyautogui_equivalent_clicks():
    # pyautogui has no general double or right click, so these read back as their own kinds.
    action_format = get_action_format("pyautogui")
    assert action_format.parse(action_format.format(Click(x=0.5, y=0.5, clicks=2))) == DoubleClick(x=0.5, y=0.5)
    assert action_format.parse(action_format.format(Click(x=0.5, y=0.5, button="right"))) == RightClick(x=0.5, y=0.5)


def test_holdfast_format_is_compact_form():
    action_format = get_action_format("holdfast")
    assert action_format.format(Click(x=0.5, y=0.25)) == "click(0.500,0.250)"
    assert action_format.parse("  done(success)\n") == Done(status="success")


def test_unknown_format_lists_known():
    with pytest.raises(ValueError, match="unknown action format 'xml'; choose one of .*holdfast.*json.*pyautogui"):
        get_action_format("xml")


def test_register_custom_format():
    def parse_upper(text: str):
        return get_action_format("holdfast").parse(text.lower())

    def format_upper(action) -> str:
        return get_action_format("holdfast").format(action).upper()

    custom = ActionFormat("test-upper", "Write actions in capitals.", parse_upper, format_upper)
    register_action_format(custom)
    try:
        assert get_action_format("test-upper").parse("CLICK(0.100,0.200)") == Click(x=0.1, y=0.2)
        with pytest.raises(ValueError, match="already registered"):
            register_action_format(custom)
        register_action_format(custom, replace=True)
    finally:
        from agent import action_formats

        action_formats._FORMATS.pop("test-upper", None)
