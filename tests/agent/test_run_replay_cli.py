"""`holdfast run` and `holdfast replay` end to end on Xvfb."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.cli import main
from agent.executor import Executor
from agent.loop import run_agent
from agent.screen import ScreenCapture
from agent.trajectory import TrajectoryRecorder, load_trajectory, new_task_info

pytestmark = pytest.mark.desktop


def holdfast(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter, on the session's Xvfb (DISPLAY is set)."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"},
    )


def test_run_tiny_dry_run(tmp_path, xvfb_display):
    folder = tmp_path / "run"
    completed = holdfast("run", "click the OK button", "--model", "tiny", "--dry-run", "--max-steps", "3",
                         "--record", str(folder))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    trajectory = load_trajectory(folder)
    assert trajectory.task.instruction == "click the OK button"
    assert trajectory.task.model == "tiny"
    assert (trajectory.task.screen_width, trajectory.task.screen_height) == (xvfb_display.width, xvfb_display.height)
    assert trajectory.task.status in ("max_steps", "unparseable", "success", "failure")
    assert 1 <= len(trajectory.steps) <= 3
    assert not any(step.executed for step in trajectory.steps)
    assert "run ended" in completed.stdout


def test_run_refuses_random_model_live(tmp_path, xvfb_display):
    completed = holdfast("run", "anything", "--model", "tiny", "--record", str(tmp_path / "run"))
    assert completed.returncode == 2
    assert "random weights" in completed.stderr
    assert not (tmp_path / "run").exists()


def test_run_without_display(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    completed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "anything", "--dry-run"],
        capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"},
    )
    assert completed.returncode == 2
    assert "no X display: set DISPLAY or run under Xvfb" in completed.stderr


def record_click_and_type(folder, window, geometry):
    def point(widget):
        x, y = geometry.from_pixels(*window.center(widget))
        return f"{x:.3f},{y:.3f}"

    class Scripted:
        name = "scripted"
        texts = [f"click({point('button')})", f"click({point('entry')})", 'type("replayed")', "done(success)"]

        def start(self, instruction): pass
        def observe(self, screenshot): pass
        def feed_action(self, text): pass
        def state_bytes(self): return 0

        def predict(self, *, commit=True):
            return self.texts.pop(0)

    with ScreenCapture() as screen:
        recorder = TrajectoryRecorder(folder, new_task_info("click then type", geometry.size, "scripted"))
        result = run_agent("click then type", Scripted(), screen, Executor(geometry, pause=0.05), recorder)
    assert result.status == "success"


def test_replay_reproduces_state(tmp_path, start_tk_window, geometry):
    folder = tmp_path / "run"
    recorded_window = start_tk_window()
    record_click_and_type(folder, recorded_window, geometry)
    assert recorded_window.state()["text"] == "replayed"
    recorded_window.close()

    fresh = start_tk_window()
    assert fresh.state()["clicks"] == 0
    code = main(["replay", str(folder), "--execute", "--settle", "0.5"])
    state = fresh.state()
    assert state["clicks"] == 1
    assert state["text"] == "replayed"
    assert code == 0


def test_replay_detects_moved_window(tmp_path, start_tk_window, geometry, capsys):
    folder = tmp_path / "run"
    recorded_window = start_tk_window()
    record_click_and_type(folder, recorded_window, geometry)
    recorded_window.close()

    moved = start_tk_window(left=600, top=300)  # the "changed application": same window, elsewhere
    code = main(["replay", str(folder), "--execute", "--settle", "0.3"])
    assert code == 1
    assert moved.state()["clicks"] == 0
    assert "FAIL" in capsys.readouterr().out


def test_replay_lists_without_execute(tmp_path, start_tk_window, geometry, capsys):
    folder = tmp_path / "run"
    record_click_and_type(folder, start_tk_window(), geometry)
    assert main(["replay", str(folder)]) == 0
    output = capsys.readouterr().out
    assert 'type("replayed")' in output
    assert "4 steps" in output


def test_replay_rejects_bad_folder(tmp_path, capsys):
    assert main(["replay", str(tmp_path), "--execute"]) == 2
    assert "task.json not found" in capsys.readouterr().err


def test_capture_benchmark_prints_figures(xvfb_display):
    completed = subprocess.run(
        [sys.executable, "-m", "agent.screen", "--bench", "--steps", "5"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    assert completed.returncode == 0, completed.stderr
    assert "median" in completed.stdout
