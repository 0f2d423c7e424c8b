"""Fixtures for the offline evaluation tests: the shared AgentNetBench sample and small recordings.

Tests run with --import-mode=importlib, so helper modules next to the tests cannot be imported;
the helpers below reach the tests through the `helpers` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from agent.trajectory import TrajectoryRecorder, new_task_info

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT.parent / "shared" / "data" / "agentnetbench-sample"
SAMPLE_IDS = ("s_5473959e0f6e21f7", "s_a96285eb665bef92", "s_df0fd37049f470c2")


def write_png(path: Path, size: tuple[int, int] = (320, 180), color: tuple[int, int, int] = (40, 90, 160)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def click_truth(x: float, y: float, box: list[float] | None = None) -> dict:
    metadata = {"bboxes": [{"rel_bbox": box}]} if box else {}
    return {"type": "click", "params": {"position": {"x": x, "y": y}}, "metadata": metadata}


def write_agentnetbench(folder: Path, task_id: str, steps: list[dict], instruction: str = "Do the thing") -> Path:
    """Write an AgentNetBench-style file; each step dict gives `image` and `ground_truth_actions`.

    Screenshots named by the steps are created in `images/` unless the step sets `"create": False`.
    """
    raw_steps = []
    for number, step in enumerate(steps, start=1):
        if step.pop("create", True):
            write_png(folder / "images" / step["image"])
        raw_steps.append({"step_num": step.pop("step_num", number), **step})
    path = folder / f"{task_id}.json"
    path.write_text(json.dumps({"task_id": task_id, "user_task_description": instruction, "steps": raw_steps}))
    return path


def good_steps(prefix: str) -> list[dict]:
    return [
        {"image": f"{prefix}_1.png", "ground_truth_actions": [click_truth(0.5, 0.5, [0.45, 0.45, 0.1, 0.1])]},
        {"image": f"{prefix}_2.png", "ground_truth_actions": [
            {"type": "write", "params": {"text": "hello"}, "metadata": {}},
            {"type": "press", "params": {"keys": ["enter"]}, "metadata": {}},
        ]},
        {"image": f"{prefix}_3.png", "ground_truth_actions": [
            {"type": "terminate", "params": {"status": "success"}, "metadata": {}},
        ]},
    ]


def record_holdfast(folder: Path, actions: list, size: tuple[int, int] = (320, 200)) -> Path:
    """Record a Holdfast trajectory folder; `actions` are (action text, parsed action or None)."""
    task = new_task_info("Press the button", size, "test")
    with TrajectoryRecorder(folder, task) as recorder:
        for index, (text, action) in enumerate(actions):
            recorder.record_step(Image.new("RGB", size, (index * 30, 50, 50)), action_text=text, action=action, observed_at=0.0)
        recorder.finish("success")
    return folder


@pytest.fixture
def sample_dir() -> Path:
    if not all((SAMPLE_DIR / f"{trajectory_id}.json").is_file() for trajectory_id in SAMPLE_IDS):
        pytest.skip(f"AgentNetBench sample not found at {SAMPLE_DIR}; it ships with the shared data folder")
    return SAMPLE_DIR


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The recording helpers of this file, for tests to call."""
    return SimpleNamespace(
        SAMPLE_IDS=SAMPLE_IDS, write_png=write_png, click_truth=click_truth,
        write_agentnetbench=write_agentnetbench, good_steps=good_steps, record_holdfast=record_holdfast,
    )
