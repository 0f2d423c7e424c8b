"""The agent loop with a scripted policy, on Xvfb against the Tk test window."""

from __future__ import annotations

import pytest

from agent.executor import Executor
from agent.loop import run_agent
from agent.screen import ScreenCapture
from agent.trajectory import TrajectoryRecorder, load_trajectory, new_task_info

pytestmark = pytest.mark.desktop


class ScriptedPolicy:
    """Returns fixed action texts in order and logs every call, to check nothing is fed twice."""

    name = "scripted"

    def __init__(self, texts, interrupt_at: int | None = None, fail_at: int | None = None) -> None:
        self.texts = list(texts)
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at
        self.fail_at = fail_at

    def start(self, instruction):
        self.calls.append(f"start:{instruction}")

    def observe(self, screenshot):
        self.calls.append(f"observe:{screenshot.size[0]}x{screenshot.size[1]}")

    def predict(self, *, commit=True):
        step = sum(call == "predict" for call in self.calls)
        self.calls.append("predict")
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        if step == self.fail_at:
            raise RuntimeError("model crashed")
        return self.texts[step]

    def feed_action(self, action_text):
        self.calls.append(f"feed:{action_text}")

    def state_bytes(self):
        return 1024


def move_out_of_corner():
    """Move the mouse off the fail-safe corner so later tests in the session can use pyautogui."""
    import pyautogui

    pyautogui.FAILSAFE = False
    try:
        pyautogui.moveTo(640, 400)
    finally:
        pyautogui.FAILSAFE = True


def point(geometry, pixel):
    x, y = geometry.from_pixels(*pixel)
    return f"{x:.3f},{y:.3f}"


def run(tmp_path, policy, dry_run=False, **limits):
    with ScreenCapture() as screen:
        geometry = screen.geometry()
        recorder = TrajectoryRecorder(tmp_path / "run", new_task_info("test", geometry.size, policy.name))
        result = run_agent("test", policy, screen, Executor(geometry, pause=0.05, dry_run=dry_run), recorder, **limits)
    return result, load_trajectory(tmp_path / "run")


def test_click_type_done(tmp_path, tk_window, geometry):
    texts = [
        f"click({point(geometry, tk_window.center('button'))})",
        f"click({point(geometry, tk_window.center('entry'))})",
        'type("agent was here")',
        'done(success,"ok")',
    ]
    policy = ScriptedPolicy(texts)
    result, trajectory = run(tmp_path, policy)
    assert result.status == "success"
    assert result.answer == "ok"
    state = tk_window.state()
    assert state["clicks"] == 1
    assert state["text"] == "agent was here"
    # The instruction once, then one screenshot and one generated action per step, never fed back.
    assert policy.calls == ["start:test"] + ["observe:1280x800", "predict"] * 4
    assert trajectory.task.status == "success"
    assert trajectory.task.answer == "ok"
    assert [step.action_text for step in trajectory.steps] == texts
    assert all(step.executed and step.error is None for step in trajectory.steps)
    assert trajectory.steps[0].state_bytes == 1024
    assert trajectory.load_screenshot(trajectory.steps[0]).size == (1280, 800)


def test_stops_after_unparseable_streak(tmp_path, tk_window):
    policy = ScriptedPolicy(["clik(0.5,0.5)", "wait(0.1)", "nonsense", "click(2,2)", "", "never reached"])
    result, trajectory = run(tmp_path, policy, max_failures=3)
    assert result.status == "unparseable"
    assert len(trajectory.steps) == 5  # the wait in between reset the streak
    assert trajectory.steps[0].action is None
    assert "unknown action 'clik'" in trajectory.steps[0].error
    assert trajectory.steps[3].error is not None  # out of range: rejected at parse time
    assert trajectory.steps[1].error is None
    assert trajectory.task.status == "unparseable"


def test_stops_at_max_steps(tmp_path, tk_window):
    result, trajectory = run(tmp_path, ScriptedPolicy(["wait(0.0)"] * 10), max_steps=4)
    assert result.status == "max_steps"
    assert len(trajectory.steps) == 4
    assert trajectory.task.status == "max_steps"


def test_dry_run_records_without_acting(tmp_path, tk_window, geometry):
    text = f"click({point(geometry, tk_window.center('button'))})"
    result, trajectory = run(tmp_path, ScriptedPolicy([text, "done(failure)"]), dry_run=True)
    assert result.status == "failure"
    assert tk_window.state()["clicks"] == 0
    assert [step.executed for step in trajectory.steps] == [False, False]


def test_ctrl_c_leaves_valid_trajectory(tmp_path, tk_window):
    result, trajectory = run(tmp_path, ScriptedPolicy(["wait(0.0)"] * 5, interrupt_at=2))
    assert result.status == "interrupted"
    assert len(trajectory.steps) == 2
    assert trajectory.task.status == "interrupted"
    assert trajectory.task.end_time is not None


def test_failsafe_stops_cleanly(tmp_path, tk_window):
    # The first action parks the mouse in the top-left corner; pyautogui's fail-safe then
    # stops the next action before it runs.
    try:
        result, trajectory = run(tmp_path, ScriptedPolicy(["move(0.000,0.000)", "click(0.500,0.500)", "done(success)"]))
    finally:
        move_out_of_corner()
    assert result.status == "interrupted"
    assert len(trajectory.steps) == 2
    assert trajectory.steps[1].executed is False
    assert trajectory.steps[1].error == "interrupted while executing"
    assert trajectory.task.status == "interrupted"
    assert tk_window.state()["clicks"] == 0


def test_policy_crash_marks_error(tmp_path, tk_window):
    with pytest.raises(RuntimeError, match="model crashed"):
        run(tmp_path, ScriptedPolicy(["wait(0.0)"] * 3, fail_at=1))
    trajectory = load_trajectory(tmp_path / "run")
    assert trajectory.task.status == "error"
    assert len(trajectory.steps) == 1
