"""Trajectory recorder and loader: round trip, crash safety, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from agent.actions import Click, parse_action
from agent.trajectory import (
    TaskInfo,
    TrajectoryError,
    TrajectoryRecorder,
    load_trajectory,
    new_task_info,
)


def make_task(**fields) -> TaskInfo:
    return TaskInfo(
        instruction="press the button", screen_width=64, screen_height=48, model="scripted",
        start_time="2026-01-01T00:00:00+00:00", code_version="test", **fields,
    )


def record(folder, count: int) -> TrajectoryRecorder:
    recorder = TrajectoryRecorder(folder, make_task())
    for index in range(count):
        image = Image.new("RGB", (64, 48), (index * 40, 0, 0))
        recorder.record_step(
            image, action_text="click(0.500,0.500)", action=Click(x=0.5, y=0.5),
            observed_at=1000.0 + index, acted_at=1000.5 + index, latency_ms=12.5, state_bytes=4096, executed=True,
        )
    return recorder


def test_round_trip(tmp_path):
    recorder = record(tmp_path / "run", 3)
    recorder.finish("success", answer="42", reward=1.0)
    trajectory = load_trajectory(tmp_path / "run")
    assert trajectory.task.status == "success"
    assert trajectory.task.answer == "42"
    assert trajectory.task.reward == 1.0
    assert trajectory.task.end_time is not None
    assert [step.index for step in trajectory.steps] == [0, 1, 2]
    assert trajectory.steps[1].screenshot == "step_0001.png"
    assert trajectory.steps[1].action == Click(x=0.5, y=0.5)
    assert trajectory.load_screenshot(trajectory.steps[2]).getpixel((0, 0)) == (80, 0, 0)


def test_unparseable_step_has_null_action(tmp_path):
    recorder = TrajectoryRecorder(tmp_path / "run", make_task())
    recorder.record_step(
        Image.new("RGB", (8, 8)), action_text="clack(", action=None, observed_at=1.0, error="invalid action"
    )
    recorder.finish("unparseable")
    line = json.loads((tmp_path / "run" / "steps.jsonl").read_text())
    assert line["action"] is None
    assert line["error"] == "invalid action"
    assert load_trajectory(tmp_path / "run").steps[0].action is None


def test_new_task_info_stamps_provenance():
    task = new_task_info("open the editor", (1280, 800), "tiny", task_name="click-button", seed=3)
    assert (task.screen_width, task.screen_height) == (1280, 800)
    assert task.code_version
    assert task.start_time.startswith("20")
    assert task.seed == 3


def test_unfinished_run_is_valid(tmp_path):
    recorder = record(tmp_path / "run", 2)
    recorder.close()
    trajectory = load_trajectory(tmp_path / "run")
    assert trajectory.task.status == "running"
    assert len(trajectory.steps) == 2


def test_killed_process_leaves_valid_trajectory(tmp_path):
    folder = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os
        from PIL import Image
        from agent.actions import Wait
        from agent.trajectory import TaskInfo, TrajectoryRecorder
        task = TaskInfo(instruction="x", screen_width=8, screen_height=8, model="m",
                        start_time="t", code_version="v")
        recorder = TrajectoryRecorder({str(folder)!r}, task)
        for index in range(3):
            recorder.record_step(Image.new("RGB", (8, 8)), action_text="wait(1.0)",
                                 action=Wait(seconds=1.0), observed_at=float(index))
        os._exit(9)  # no finish, no close, no flush by the interpreter
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 9, completed.stderr
    trajectory = load_trajectory(folder)
    assert len(trajectory.steps) == 3
    assert trajectory.task.status == "running"


def test_cut_short_last_line_is_dropped(tmp_path, caplog):
    record(tmp_path / "run", 2).close()
    steps = tmp_path / "run" / "steps.jsonl"
    with open(steps, "a", encoding="utf-8") as handle:
        handle.write('{"index": 2, "screenshot": "step_0')
    assert len(load_trajectory(tmp_path / "run").steps) == 2
    assert "incomplete" in caplog.text


def test_invalid_line_named(tmp_path):
    record(tmp_path / "run", 3).close()
    steps = tmp_path / "run" / "steps.jsonl"
    lines = steps.read_text().splitlines()
    lines[1] = lines[1].replace('"latency_ms":12.5', '"latency_ms":"slow"')
    steps.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrajectoryError, match=r"steps.jsonl line 2 is invalid"):
        load_trajectory(tmp_path / "run")


def test_missing_screenshot_named(tmp_path):
    record(tmp_path / "run", 2).close()
    (tmp_path / "run" / "step_0001.png").unlink()
    with pytest.raises(TrajectoryError, match=r"line 2: screenshot .*step_0001.png not found"):
        load_trajectory(tmp_path / "run")


def test_wrong_index_named(tmp_path):
    record(tmp_path / "run", 2).close()
    steps = tmp_path / "run" / "steps.jsonl"
    steps.write_text(steps.read_text().replace('"index":1', '"index":5'))
    with pytest.raises(TrajectoryError, match="line 2: step index 5, expected 1"):
        load_trajectory(tmp_path / "run")


def test_missing_or_bad_task_file(tmp_path):
    with pytest.raises(TrajectoryError, match="task.json not found"):
        load_trajectory(tmp_path)
    (tmp_path / "task.json").write_text('{"instruction": 3}')
    with pytest.raises(TrajectoryError, match="task.json is invalid"):
        load_trajectory(tmp_path)


def test_recorder_refuses_existing_run(tmp_path):
    record(tmp_path / "run", 1).close()
    with pytest.raises(FileExistsError, match="task.json already exists"):
        TrajectoryRecorder(tmp_path / "run", make_task())


def test_stored_action_is_the_parsed_form(tmp_path):
    recorder = TrajectoryRecorder(tmp_path / "run", make_task())
    action = parse_action('key("ctrl","s")')
    recorder.record_step(Image.new("RGB", (8, 8)), action_text='key("ctrl","s")', action=action, observed_at=0.0)
    recorder.close()
    line = json.loads((tmp_path / "run" / "steps.jsonl").read_text())
    assert line["action"] == {"kind": "key", "keys": ["ctrl", "s"]}
