"""The executor on a real Xvfb display against the Tk test window."""

from __future__ import annotations

import pytest

from agent.actions import Click, DoubleClick, Drag, Key, Move, Scroll, Type, Wait, parse_action
from agent.executor import DisplayError, Executor, check_display

pytestmark = pytest.mark.desktop


def normalised(geometry, pixel):
    """Return the action coordinates, rounded like every action, that land on `pixel`."""
    x, y = geometry.from_pixels(*pixel)
    return round(x, 3), round(y, 3)


def mouse_position():
    import pyautogui

    return tuple(pyautogui.position())


@pytest.fixture
def executor(geometry):
    return Executor(geometry, pause=0.05)


def test_click_presses_button(executor, geometry, tk_window):
    x, y = normalised(geometry, tk_window.center("button"))
    result = executor.execute(Click(x=x, y=y))
    assert result.status == "executed"
    assert tk_window.state()["clicks"] == 1
    executor.execute(Click(x=x, y=y))
    assert tk_window.state()["clicks"] == 2


def test_click_toggles_checkbox(executor, geometry, tk_window):
    x, y = normalised(geometry, tk_window.center("checkbox"))
    executor.execute(Click(x=x, y=y))
    assert tk_window.state()["checked"] is True
    executor.execute(Click(x=x, y=y))
    assert tk_window.state()["checked"] is False


def test_type_and_keys_edit_text_field(executor, geometry, tk_window):
    x, y = normalised(geometry, tk_window.center("entry"))
    executor.execute(Click(x=x, y=y))
    executor.execute(Type(text="hello world"))
    assert tk_window.state()["text"] == "hello world"

    executor.execute(Key(keys=["backspace"]))
    assert tk_window.state()["text"] == "hello worl"

    executor.execute(Key(keys=["shift", "a"]))  # a hotkey: shift held while a is pressed
    assert tk_window.state()["text"] == "hello worlA"

    executor.execute(Key(keys=["enter"]))
    assert tk_window.state()["submitted"] == 1


def test_scroll_moves_list(executor, geometry, tk_window):
    x, y = normalised(geometry, tk_window.center("list"))
    assert tk_window.state()["scroll_top"] == 0.0
    executor.execute(Scroll(x=x, y=y, amount=5, direction="down"))
    scrolled = tk_window.state()["scroll_top"]
    assert scrolled > 0.0
    executor.execute(Scroll(x=x, y=y, amount=5, direction="up"))
    assert tk_window.state()["scroll_top"] < scrolled


def test_move_double_click_drag_wait(executor, geometry, tk_window):
    target = tk_window.center("marker")
    executor.execute(Move(x=normalised(geometry, target)[0], y=normalised(geometry, target)[1]))
    assert abs(mouse_position()[0] - target[0]) <= 1
    assert abs(mouse_position()[1] - target[1]) <= 1

    x, y = normalised(geometry, tk_window.center("button"))
    executor.execute(DoubleClick(x=x, y=y))
    assert tk_window.state()["clicks"] == 2

    end = normalised(geometry, (700, 600))
    result = executor.execute(Drag(x=x, y=y, to_x=end[0], to_y=end[1]))
    assert result.status == "executed"
    assert abs(mouse_position()[0] - 700) <= 1
    assert executor.execute(Wait(seconds=0.1)).status == "executed"


def test_dry_run_changes_nothing(geometry, tk_window):
    executor = Executor(geometry, dry_run=True)
    before = tk_window.state()
    position = mouse_position()
    for widget in ("button", "checkbox", "entry"):
        x, y = normalised(geometry, tk_window.center(widget))
        assert executor.execute(Click(x=x, y=y)).status == "dry_run"
    assert executor.execute(Type(text="nope")).status == "dry_run"
    assert executor.execute(Key(keys=["enter"])).status == "dry_run"
    after = tk_window.state()
    assert after == before
    assert mouse_position() == position


def test_out_of_range_rejected_before_moving(executor, tk_window):
    position = mouse_position()
    before = tk_window.state()
    # model_construct skips validation, as a caller bypassing the parser would.
    for action in (Click.model_construct(x=1.5, y=0.5), Drag.model_construct(x=0.1, y=0.1, to_x=0.5, to_y=-0.2)):
        result = executor.execute(action)
        assert result.status == "rejected"
        assert "outside the screen" in result.error
    assert mouse_position() == position
    assert tk_window.state() == before


def test_untypeable_text_rejected(executor, geometry, tk_window):
    x, y = normalised(geometry, tk_window.center("entry"))
    executor.execute(Click(x=x, y=y))
    result = executor.execute(Type(text="caf\u00e9"))
    assert result.status == "rejected"
    assert "\u00e9" in result.error
    assert tk_window.state()["text"] == ""


def test_malformed_text_never_reaches_executor():
    from agent.actions import ActionParseError

    with pytest.raises(ActionParseError):
        parse_action("click(0.5,")


def test_confirm_skip_and_stop(geometry, tk_window):
    answers = iter(["n", "q", "y"])
    asked = []

    def confirm(action, text):
        asked.append(text)
        return next(answers)

    executor = Executor(geometry, confirm=confirm)
    x, y = normalised(geometry, tk_window.center("button"))
    assert executor.execute(Click(x=x, y=y)).status == "skipped"
    assert executor.execute(Click(x=x, y=y)).status == "stopped"
    assert tk_window.state()["clicks"] == 0
    assert executor.execute(Click(x=x, y=y)).status == "executed"
    assert tk_window.state()["clicks"] == 1
    assert asked == [f"click({x:.3f},{y:.3f})"] * 3


def test_failsafe_stays_on(executor):
    import pyautogui

    assert pyautogui.FAILSAFE is True


def test_check_display_passes_on_xvfb(xvfb_display):
    check_display()


def test_check_display_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="no X display: set DISPLAY or run under Xvfb"):
        check_display()


def test_check_display_wayland_only(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(DisplayError, match="no X display: set DISPLAY or run under Xvfb.*Wayland"):
        check_display()


def test_check_display_unreachable(monkeypatch, xvfb_display):
    monkeypatch.setenv("DISPLAY", ":4093")  # a display number nothing listens on here
    with pytest.raises(DisplayError, match="cannot open DISPLAY=':4093'"):
        check_display()
