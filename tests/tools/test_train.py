"""Training smoke tests on the tiny preset with trajectories written by the real recorder."""

import random
import time

import pytest
import torch
from PIL import Image, ImageDraw

from agent.actions import Click, Done
from agent.trajectory import TrajectoryRecorder, new_task_info
from model.checkpoint import load_model
from model.policy import ModelPolicy
from tools.train import TrainConfig, train


def write_demonstrations(root, count=3, seed=0):
    """Episodes of 'click the red square': two clicks on squares, then done."""
    rng = random.Random(seed)
    for episode in range(count):
        task = new_task_info("click the red square", (200, 200), "scripted")
        with TrajectoryRecorder(root / f"episode_{episode}", task) as recorder:
            for _ in range(2):
                x, y = rng.randint(20, 180), rng.randint(20, 180)
                image = Image.new("RGB", (200, 200), "white")
                ImageDraw.Draw(image).rectangle([x - 10, y - 10, x + 10, y + 10], fill="red")
                action = Click(x=round(x / 200, 3), y=round(y / 200, 3))
                recorder.record_step(image, action_text="", action=action, observed_at=time.time())
            recorder.record_step(Image.new("RGB", (200, 200), "white"), action_text="", action=Done(status="success"), observed_at=time.time())
            recorder.finish("success")


def tiny_config(steps, **changes):
    config = TrainConfig(preset="tiny", steps=steps, lr=3e-3, warmup=2, episodes_per_step=2, save_every=2, seed=1)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def test_training_lowers_loss_and_saves_loadable_model(tmp_path):
    write_demonstrations(tmp_path / "data")
    summary = train([tmp_path / "data"], tmp_path / "out", tiny_config(steps=12))

    assert summary["episodes"] == 3
    assert summary["final_loss"] < summary["first_loss"]
    model = load_model(tmp_path / "out")
    policy = ModelPolicy(model)
    policy.start("click the red square")
    policy.observe(Image.new("RGB", (200, 200), "white"))
    assert isinstance(policy.predict(), str)


def test_resume_matches_uninterrupted_run(tmp_path):
    write_demonstrations(tmp_path / "data")
    train([tmp_path / "data"], tmp_path / "straight", tiny_config(steps=4))
    train([tmp_path / "data"], tmp_path / "resumed", tiny_config(steps=2))
    train([tmp_path / "data"], tmp_path / "resumed", tiny_config(steps=4), resume=True)

    straight = load_model(tmp_path / "straight").state_dict()
    resumed = load_model(tmp_path / "resumed").state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=lambda m, n=name: f"{n}: {m}")


def test_training_is_deterministic_for_a_seed(tmp_path):
    write_demonstrations(tmp_path / "data")
    first = train([tmp_path / "data"], tmp_path / "a", tiny_config(steps=3))
    second = train([tmp_path / "data"], tmp_path / "b", tiny_config(steps=3))
    assert first["final_loss"] == second["final_loss"]


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: not found"):
        train([tmp_path / "nowhere"], tmp_path / "out", tiny_config(steps=1))
