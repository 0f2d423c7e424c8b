"""The action space: compact text round trips, rejection of bad text, pyautogui recordings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    action_from_dict,
    action_to_dict,
    format_action,
    keyboard_keys,
    parse_action,
    parse_pyautogui,
)

coordinates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
texts = st.text(min_size=1, max_size=40)
key_names = st.sampled_from(sorted(keyboard_keys()))

actions = st.one_of(
    st.builds(
        Click, x=coordinates, y=coordinates,
        button=st.sampled_from(["left", "right", "middle"]), clicks=st.integers(1, 3),
    ),
    st.builds(DoubleClick, x=coordinates, y=coordinates),
    st.builds(RightClick, x=coordinates, y=coordinates),
    st.builds(Move, x=coordinates, y=coordinates),
    st.builds(Drag, x=coordinates, y=coordinates, to_x=coordinates, to_y=coordinates),
    st.builds(
        Scroll, x=coordinates, y=coordinates, amount=st.integers(1, 50),
        direction=st.sampled_from(["up", "down", "left", "right"]),
    ),
    st.builds(Type, text=texts),
    st.builds(Key, keys=st.lists(key_names, min_size=1, max_size=4)),
    st.builds(Wait, seconds=st.floats(min_value=0.0, max_value=60.0, allow_nan=False)),
    st.builds(Done, status=st.sampled_from(["success", "failure"]), answer=st.none() | st.text(max_size=20)),
)


@settings(max_examples=400, deadline=None)
@given(actions)
def test_parse_inverts_format(action):
    assert parse_action(format_action(action)) == action


@settings(max_examples=400, deadline=None)
@given(actions)
def test_format_inverts_parse(action):
    text = format_action(action)
    assert format_action(parse_action(text)) == text


@settings(max_examples=200, deadline=None)
@given(actions)
def test_dict_round_trip(action):
    assert action_from_dict(action_to_dict(action)) == action


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("click(0.312,0.540)", Click(x=0.312, y=0.54)),
        ("click(0.1, 0.2, right, 2)", Click(x=0.1, y=0.2, button="right", clicks=2)),
        ('click(0.1,0.2,"middle",1)', Click(x=0.1, y=0.2, button="middle")),
        ("double_click(0.500,0.500)", DoubleClick(x=0.5, y=0.5)),
        ("right_click(1,0)", RightClick(x=1.0, y=0.0)),
        ("drag(0.1,0.2,0.3,0.4)", Drag(x=0.1, y=0.2, to_x=0.3, to_y=0.4)),
        ("scroll(0.5,0.5,up,3)", Scroll(x=0.5, y=0.5, amount=3, direction="up")),
        (r'type("a \"quoted\" line\n")', Type(text='a "quoted" line\n')),
        ('key("Enter")', Key(keys=["enter"])),
        ('key("ctrl","shift","t")', Key(keys=["ctrl", "shift", "t"])),
        ("wait(2)", Wait(seconds=2.0)),
        ("done(success)", Done()),
        ('done(failure,"no such file")', Done(status="failure", answer="no such file")),
        ("  click(0.3,0.4)\n", Click(x=0.3, y=0.4)),
    ],
)
def test_parse_action_examples(text, expected):
    assert parse_action(text) == expected


def test_coordinates_round_to_three_decimals():
    assert Click(x=0.31249, y=0.5).x == 0.312
    assert format_action(Click(x=0.31251, y=0.5)) == "click(0.313,0.500)"


@pytest.mark.parametrize(
    "text",
    [
        "click(1.2,0.5)",
        "click(-0.1,0.5)",
        "click(0.1)",
        "click(0.1,0.2",
        "click(nan,0.1)",
        "click(1e999,0.1)",
        "click(True,0.1)",
        "click(0.1,0.2,left,9)",
        "click(0.1,0.2,thumb,1)",
        "click(x=0.1,y=0.2)",
        "scroll(0.5,0.5,sideways,1)",
        "scroll(0.5,0.5,down,0)",
        'key("nokey")',
        "key()",
        'type("")',
        "type(f'{x}')",
        "wait(61)",
        "done(maybe)",
        "foo(1)",
        '__import__("os").system("true")',
        "click(0.1,0.2) + click(0.3,0.4)",
        "",
        "I will click the button",
        "\x00",
    ],
)
def test_parse_action_rejects(text):
    with pytest.raises(ActionParseError) as caught:
        parse_action(text)
    assert caught.value.text == text
    assert isinstance(caught.value, ValueError)


def test_parse_error_names_field():
    with pytest.raises(ActionParseError, match="x: Input should be less than or equal to 1"):
        parse_action("click(1.5,0.5)")


def test_pyautogui_recorded_step():
    code = """import pyautogui
pyautogui.click(x=0.3, y=0.2)
pyautogui.write(message='hello world')
pyautogui.press(keys=['enter'])
"""
    assert parse_pyautogui(code) == [Click(x=0.3, y=0.2), Type(text="hello world"), Key(keys=["enter"])]


def test_pyautogui_scroll_takes_move_point():
    actions = parse_pyautogui("pyautogui.moveTo(x=0.5, y=0.4)\npyautogui.scroll(-3)")
    assert actions == [Scroll(x=0.5, y=0.4, amount=3, direction="down")]
    up = parse_pyautogui("pyautogui.moveTo(0.5, 0.4)\npyautogui.scroll(2)")
    assert up == [Scroll(x=0.5, y=0.4, amount=2, direction="up")]
    right = parse_pyautogui("pyautogui.hscroll(4, x=0.1, y=0.9)")
    assert right == [Scroll(x=0.1, y=0.9, amount=4, direction="right")]


def test_pyautogui_drag_starts_at_move_point():
    actions = parse_pyautogui("pyautogui.moveTo(0.1, 0.2)\npyautogui.dragTo(x=0.7, y=0.8, button='left')")
    assert actions == [Drag(x=0.1, y=0.2, to_x=0.7, to_y=0.8)]


def test_pyautogui_move_alone_is_move():
    assert parse_pyautogui("pyautogui.moveTo(0.25, 0.75)") == [Move(x=0.25, y=0.75)]
    moved_then_clicked = parse_pyautogui("pyautogui.moveTo(0.1, 0.1)\npyautogui.click(0.2, 0.2)")
    assert moved_then_clicked == [Move(x=0.1, y=0.1), Click(x=0.2, y=0.2)]


def test_pyautogui_click_variants():
    code = """pyautogui.doubleClick(x=0.2, y=0.3)
pyautogui.rightClick(0.4, 0.5)
pyautogui.tripleClick(0.6, 0.7)
pyautogui.click(0.1, 0.1, button='right')
pyautogui.middleClick(0.9, 0.9)
"""
    assert parse_pyautogui(code) == [
        DoubleClick(x=0.2, y=0.3),
        RightClick(x=0.4, y=0.5),
        Click(x=0.6, y=0.7, clicks=3),
        RightClick(x=0.1, y=0.1),
        Click(x=0.9, y=0.9, button="middle"),
    ]


def test_pyautogui_keys():
    code = """pyautogui.press('enter')
pyautogui.press(keys=['tab', 'tab'])
pyautogui.press('down', presses=2)
pyautogui.hotkey('ctrl', 'c')
pyautogui.hotkey(keys=['ctrl', 'V'])
"""
    assert parse_pyautogui(code) == [
        Key(keys=["enter"]),
        Key(keys=["tab"]),
        Key(keys=["tab"]),
        Key(keys=["down"]),
        Key(keys=["down"]),
        Key(keys=["ctrl", "c"]),
        Key(keys=["ctrl", "V"]),
    ]


def test_pyautogui_terminate_and_wait():
    assert parse_pyautogui("computer.terminate(status='success')") == [Done(status="success")]
    failed = parse_pyautogui("computer.terminate(status='failure', answer='not found')")
    assert failed == [Done(status="failure", answer="not found")]
    assert parse_pyautogui("time.sleep(1.5)") == [Wait(seconds=1.5)]


@pytest.mark.parametrize(
    "code",
    [
        "pyautogui.scroll(-3)",  # no point to scroll at
        "pyautogui.dragTo(0.5, 0.5)",  # no start point
        "pyautogui.click(x=640, y=400)",  # pixels, not fractions
        "pyautogui.write(message=secret)",  # a variable is read as the word 'secret', not a string
        "os.system('rm -rf /')",
        "x = 1",
        "pyautogui.click(",
        "",
        "import pyautogui",
        "pyautogui.press('nokey')",
    ],
)
def test_parse_pyautogui_rejects(code):
    with pytest.raises(ActionParseError) as caught:
        parse_pyautogui(code)
    assert caught.value.text == code
