"""Training smoke tests on the tiny preset with trajectories written by the real recorder."""

import random
import re
import string
import time

import pytest
import torch
from PIL import Image, ImageDraw

from agent.actions import Click, Done, Drag, Type, format_action, parse_action
from agent.trajectory import STATUS_MAX_STEPS, TrajectoryRecorder, new_task_info
from model.checkpoint import build_model, load_model, save_model
from model.policy import ModelPolicy
from model.tokenizer import ByteTokenizer
from tools.train import (
    TrainConfig, episode_losses, length_groups, load_episodes, new_optimizer, round_coordinates, screenshot_reliance,
    sequence_length, substitute_quoted_text, tokenize_episode, train, training_step,
)


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


def test_resume_rejects_other_loss_average(tmp_path):
    write_demonstrations(tmp_path / "data")
    train([tmp_path / "data"], tmp_path / "out", tiny_config(steps=2, loss_average="tokens"))
    before = load_model(tmp_path / "out").state_dict()

    with pytest.raises(ValueError, match="trained with loss_average 'tokens'.*--loss-average tokens"):
        train([tmp_path / "data"], tmp_path / "out", tiny_config(steps=4), resume=True)

    after = load_model(tmp_path / "out").state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    summary = train([tmp_path / "data"], tmp_path / "out", tiny_config(steps=4, loss_average="tokens"), resume=True)
    assert summary["steps"] == 4
    assert summary["loss_average"] == "tokens"


def test_training_is_deterministic_for_a_seed(tmp_path):
    write_demonstrations(tmp_path / "data")
    first = train([tmp_path / "data"], tmp_path / "a", tiny_config(steps=3))
    second = train([tmp_path / "data"], tmp_path / "b", tiny_config(steps=3))
    assert first["final_loss"] == second["final_loss"]


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: not found"):
        train([tmp_path / "nowhere"], tmp_path / "out", tiny_config(steps=1))


def test_training_window_is_used_and_saved(tmp_path):
    """A run with its own attention window learns through that window and saves it for inference."""
    write_demonstrations(tmp_path / "data")
    preset_window = build_model("tiny").config.attention_window
    short = train([tmp_path / "data"], tmp_path / "short", tiny_config(steps=2, attention_window=8))
    train([tmp_path / "data"], tmp_path / "preset", tiny_config(steps=2))

    assert short["attention_window"] == 8 != preset_window
    assert load_model(tmp_path / "short").config.attention_window == 8
    assert load_model(tmp_path / "preset").config.attention_window == preset_window
    # An episode is longer than 8 tokens, so the shorter band changes the gradients and the weights.
    short_weights = load_model(tmp_path / "short").state_dict()
    preset_weights = load_model(tmp_path / "preset").state_dict()
    assert any(not torch.equal(short_weights[name], tensor) for name, tensor in preset_weights.items())


def write_uneven_demonstrations(root):
    """Episodes of one, two and three steps with different instructions, so a batch needs padding."""
    rng = random.Random(5)
    for episode, (instruction, steps) in enumerate([("a", 1), ("click the blue one", 3), ("two", 2)]):
        task = new_task_info(instruction, (200, 200), "scripted")
        with TrajectoryRecorder(root / f"episode_{episode}", task) as recorder:
            for _ in range(steps):
                image = Image.new("RGB", (200, 200), tuple(rng.randrange(256) for _ in range(3)))
                action = Click(x=round(rng.random(), 3), y=round(rng.random(), 3))
                recorder.record_step(image, action_text="", action=action, observed_at=time.time())
            recorder.finish("success")


def test_padded_batch_loss_matches_single(tmp_path):
    write_uneven_demonstrations(tmp_path / "data")
    model = build_model("tiny", seed=3)
    episodes, problems = load_episodes([tmp_path / "data"], model)
    assert not problems and sorted(len(e.action_ids) for e in episodes) == [1, 2, 3]

    batched, batched_counts = episode_losses(model, episodes, [e.pixels.float() for e in episodes])
    alone = [episode_losses(model, [e], [e.pixels.float()]) for e in episodes]

    torch.testing.assert_close(batched, torch.cat([loss for loss, _ in alone]), rtol=1e-5, atol=1e-5)
    assert torch.equal(batched_counts, torch.cat([counts for _, counts in alone]))


@pytest.mark.parametrize("average", ["episodes", "tokens"])
def test_loss_average_weighs_episodes_or_targets(tmp_path, average):
    write_uneven_demonstrations(tmp_path / "data")
    model = build_model("tiny", seed=3)
    episodes, _ = load_episodes([tmp_path / "data"], model)
    means, counts = episode_losses(model, episodes, [e.pixels.float() for e in episodes])
    expected = {"episodes": means.mean(), "tokens": (means * counts).sum() / counts.sum()}
    # The episodes differ in length, so the two averages differ and the check can distinguish them.
    assert not torch.isclose(expected["episodes"], expected["tokens"])

    config = TrainConfig(preset="tiny", loss_average=average, shift_pixels=0, color_jitter=0.0, text_substitution=0.0)
    loss, targets = training_step(model, new_optimizer(model, config), episodes, config, torch.Generator().manual_seed(0))

    assert loss == pytest.approx(expected[average].item(), rel=1e-5)
    assert targets == int(counts.sum())


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first]] + partition
        for index in range(len(partition)):
            yield partition[:index] + [[first] + partition[index]] + partition[index + 1:]


def padded_cost(groups, lengths, pass_overhead):
    return sum(len(group) * max(lengths[i] for i in group) + pass_overhead for group in groups)


@pytest.mark.parametrize("seed", range(4))
def test_length_groups_cheapest_split(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([120, 130, 250, 500, 600]) + rng.randrange(10) for _ in range(7)]
    for pass_overhead in (0, 64, 256, 10_000):
        groups = length_groups(lengths, pass_overhead)
        assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
        partitions = set_partitions(list(range(len(lengths))))
        cheapest = min(padded_cost(partition, lengths, pass_overhead) for partition in partitions)
        assert padded_cost(groups, lengths, pass_overhead) == cheapest
    assert len(length_groups(lengths, 10_000)) == 1
    assert len(length_groups(lengths, 0)) == len(set(lengths))
    assert length_groups(lengths, None) == [list(range(len(lengths)))]


@pytest.mark.parametrize("average", ["episodes", "tokens"])
def test_grouped_step_matches_one_pass(tmp_path, average):
    write_uneven_demonstrations(tmp_path / "data")
    model = build_model("tiny", seed=3)
    episodes, _ = load_episodes([tmp_path / "data"], model)
    image_tokens = model.config.vision.image_tokens
    assert len({sequence_length(e, image_tokens) for e in episodes}) == 3
    results = {}
    for name, pass_overhead in (("one pass", None), ("grouped", 0)):
        config = TrainConfig(preset="tiny", loss_average=average, pass_overhead_tokens=pass_overhead)
        trained = build_model("tiny", seed=3)
        loss, targets = training_step(trained, new_optimizer(trained, config), episodes, config, torch.Generator().manual_seed(5))
        gradient = torch.cat([p.grad.flatten() for p in trained.parameters() if p.grad is not None])
        results[name] = loss, targets, gradient
    # Same augmentation draws, same loss, same gradient: only the padding differs.
    loss, targets, gradient = results["grouped"]
    one_pass_loss, one_pass_targets, one_pass_gradient = results["one pass"]
    assert loss == pytest.approx(one_pass_loss, rel=1e-5)
    assert targets == one_pass_targets
    tolerance = 1e-6 * float(one_pass_gradient.abs().max())
    torch.testing.assert_close(gradient, one_pass_gradient, rtol=1e-4, atol=tolerance)


def test_training_skips_failed_trajectories(tmp_path):
    write_uneven_demonstrations(tmp_path / "data")
    task = new_task_info("click the red one", (200, 200), "scripted")
    with TrajectoryRecorder(tmp_path / "data" / "failed", task) as recorder:
        recorder.record_step(Image.new("RGB", (200, 200), "red"), action_text="", action=Click(x=0.5, y=0.5),
                             observed_at=time.time())
        recorder.finish(STATUS_MAX_STEPS)
    model = build_model("tiny", seed=3)

    episodes, problems = load_episodes([tmp_path / "data"], model)
    assert len(episodes) == 3
    assert "click the red one" not in [episode.instruction for episode in episodes]
    (problem,) = problems
    assert str(tmp_path / "data" / "failed") in problem
    assert "'max_steps'" in problem
    assert "--include-unsuccessful" in problem

    everything, problems = load_episodes([tmp_path / "data"], model, include_unsuccessful=True)
    assert not problems
    assert "click the red one" in [episode.instruction for episode in everything]


def test_training_rounds_coordinates(tmp_path):
    write_uneven_demonstrations(tmp_path / "data")
    model = build_model("tiny", seed=3)
    recorded, _ = load_episodes([tmp_path / "data"], model)
    rounded, _ = load_episodes([tmp_path / "data"], model, coordinate_decimals=1)
    tokenizer = ByteTokenizer()
    for original, coarse in zip(recorded, rounded):
        for original_ids, coarse_ids in zip(original.action_ids, coarse.action_ids):
            original_action = parse_action(tokenizer.decode(original_ids))
            coarse_action = parse_action(tokenizer.decode(coarse_ids))
            assert coarse_action.x == round(original_action.x, 1)
            assert coarse_action.y == round(original_action.y, 1)
    assert format_action(round_coordinates(Drag(x=0.123, y=0.456, to_x=0.789, to_y=0.5), 2)) == "drag(0.120,0.460,0.790,0.500)"
    assert round_coordinates(Type(text="0.123"), 1) == Type(text="0.123")


@pytest.mark.parametrize("field, value, message", [
    ("coordinate_decimals", 4, "invalid coordinate_decimals 4"),
    ("episodes_per_step", 0, "invalid episodes_per_step 0"),
    ("attention_window", 0, "invalid attention_window 0"),
    ("loss_average", "mean", "invalid loss_average 'mean'"),
    ("pass_overhead_tokens", -1, "invalid pass_overhead_tokens -1"),
])
def test_bad_training_settings_are_named(tmp_path, field, value, message):
    write_demonstrations(tmp_path / "data")
    with pytest.raises(ValueError, match=message):
        train([tmp_path / "data"], tmp_path / "out", tiny_config(steps=1, **{field: value}))
    assert not (tmp_path / "out").exists()


def text_episode(instruction, actions):
    return tokenize_episode("demo", instruction, torch.zeros(len(actions), 3, 4, 4), [parse_action(a) for a in actions])


def test_text_substitution_swaps_typed_strings():
    episode = text_episode(
        'Enter the username "karrie" and the password "Ab3" and press "login".',
        ['click(0.5,0.5)', 'type("karrie")', 'type("Ab3")'],
    )
    swapped = substitute_quoted_text(episode, torch.Generator().manual_seed(0))

    username, password, button = re.findall(r'"([^"]+)"', swapped.instruction)
    assert username != "karrie"
    assert password != "Ab3"
    assert button == "login"  # quoted but never typed, so it stays
    assert username.islower()
    assert len(username) == 6
    assert password[0].isupper()
    assert password[1].islower()
    assert password[2].isdigit()
    assert [format_action(a) for a in swapped.actions] == ['click(0.500,0.500)', f'type("{username}")', f'type("{password}")']
    tokenizer = ByteTokenizer()
    assert tokenizer.decode(swapped.instruction_ids) == swapped.instruction
    assert [tokenizer.decode(ids) for ids in swapped.action_ids] == [format_action(a) for a in swapped.actions]
    assert swapped.pixels is episode.pixels


def test_text_substitution_keeps_case_change():
    episode = text_episode('Type "agustina" in all upper case letters.', ['type("AGUSTINA")'])
    swapped = substitute_quoted_text(episode, torch.Generator().manual_seed(1))
    (new,) = re.findall(r'"([^"]+)"', swapped.instruction)
    assert new != "agustina"
    assert swapped.actions[0].text == new.upper()


def test_text_substitution_skips_untyped_quotes():
    episode = text_episode('Click on the "okay" button.', ['click(0.1,0.2)'])
    assert substitute_quoted_text(episode, torch.Generator().manual_seed(0)) is episode


def test_screenshot_reliance_zero_for_blind_model(tmp_path):
    write_uneven_demonstrations(tmp_path / "data")
    write_demonstrations(tmp_path / "more")
    model = build_model("tiny", seed=3)
    episodes, _ = load_episodes([tmp_path / "data", tmp_path / "more"], model)

    seeing = screenshot_reliance(model, episodes)
    # A projector that outputs zeros makes every screenshot the same input.
    torch.nn.init.zeros_(model.mlp1[-1].weight)
    blind = screenshot_reliance(model, episodes)

    # Four episodes have 3 steps; the 1-step and 2-step episodes have no partner and are left out.
    assert seeing["episodes"] == 4
    assert blind["episodes"] == 4
    assert seeing["increase"] != 0
    assert blind["increase"] == 0
    assert blind["own_screenshots_loss"] == blind["swapped_screenshots_loss"]


def test_screenshot_reliance_needs_equal_lengths(tmp_path):
    write_uneven_demonstrations(tmp_path / "data")
    model = build_model("tiny", seed=3)
    episodes, _ = load_episodes([tmp_path / "data"], model)
    with pytest.raises(ValueError, match="no two episodes have the same number of steps"):
        screenshot_reliance(model, episodes)


def red_square(rng, size=200, half=20):
    """A white screen with a red square at a random place, and the square's centre in pixels."""
    x, y = rng.randint(half, size - half), rng.randint(half, size - half)
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).rectangle([x - half, y - half, x + half, y + half], fill="red")
    return image, x, y


def test_pointer_head_learns_to_click_what_it_sees(tmp_path):
    """Trained on 32 one-click episodes, the tiny model clicks inside squares it never saw.

    A model that ignores the screen lands in a 40-pixel square of a 200-pixel screen about one
    time in 25.
    """
    rng = random.Random(0)
    for episode in range(32):
        task = new_task_info("click the red square", (200, 200), "scripted")
        with TrajectoryRecorder(tmp_path / "data" / f"episode_{episode}", task) as recorder:
            image, x, y = red_square(rng)
            recorder.record_step(image, action_text="", action=Click(x=x / 200, y=y / 200), observed_at=time.time())
            recorder.finish("success")
    config = TrainConfig(preset="tiny", steps=100, lr=3e-3, warmup=2, episodes_per_step=4, save_every=100, seed=1)
    train([tmp_path / "data"], tmp_path / "out", config)

    policy = ModelPolicy(load_model(tmp_path / "out"))
    hits = 0
    for _ in range(20):
        image, x, y = red_square(rng)
        policy.start("click the red square")
        policy.observe(image)
        action = parse_action(policy.predict())
        hits += isinstance(action, Click) and abs(action.x * 200 - x) <= 20 and abs(action.y * 200 - y) <= 20
    assert hits >= 14


def typed_correctly(tmp_path, example, episodes, steps):
    """Train the tiny model on `episodes` one-step typing episodes from `example()` (an
    instruction and the text typed for it), then count exact actions on 20 new examples."""
    for episode in range(episodes):
        instruction, typed = example()
        task = new_task_info(instruction, (200, 200), "scripted")
        with TrajectoryRecorder(tmp_path / "data" / f"episode_{episode}", task) as recorder:
            recorder.record_step(Image.new("RGB", (200, 200), "white"), action_text="", action=Type(text=typed), observed_at=time.time())
            recorder.finish("success")
    config = TrainConfig(preset="tiny", steps=steps, lr=3e-3, warmup=2, episodes_per_step=4, save_every=steps, seed=1,
                         text_substitution=0.0)
    train([tmp_path / "data"], tmp_path / "out", config)

    policy = ModelPolicy(load_model(tmp_path / "out"))
    correct = 0
    for _ in range(20):
        instruction, typed = example()
        policy.start(instruction)
        policy.observe(Image.new("RGB", (200, 200), "white"))
        correct += policy.predict() == format_action(Type(text=typed))
    return correct


def test_copy_head_types_names_it_never_saw(tmp_path):
    """Trained on 32 episodes that type the quoted name, the tiny model types new names."""
    rng = random.Random(0)

    def example():
        typed = rng.choice(string.ascii_uppercase) + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 6)))
        return f'Enter "{typed}" into the field.', typed

    assert typed_correctly(tmp_path, example, episodes=32, steps=150) >= 8


def test_copy_head_changes_case(tmp_path):
    """Trained on 48 episodes that type the quoted name in the case the instruction names,
    the tiny model types new names in that case."""
    rng = random.Random(0)

    def example():
        name = rng.choice(string.ascii_uppercase) + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
        case = rng.choice(["upper", "lower"])
        return f'Type "{name}" in all {case} case letters.', name.upper() if case == "upper" else name.lower()

    assert typed_correctly(tmp_path, example, episodes=48, steps=200) >= 8


def test_init_fills_missing_head(tmp_path):
    """`init` copies every tensor the older checkpoint has and names the ones it lacks."""
    data = tmp_path / "data"
    write_demonstrations(data, count=2)
    older = build_model("tiny", seed=5)
    older.config = older.config.model_copy(update={"copy_case": False})
    del older.copy_head.case
    older.copy_head.case = None
    save_model(older, tmp_path / "older")
    config = TrainConfig(preset="tiny", steps=1, lr=0.0, warmup=1, episodes_per_step=1, save_every=1, init=str(tmp_path / "older"))
    summary = train([data], tmp_path / "out", config)
    assert summary["fresh_tensors"] == ["copy_head.case.bias", "copy_head.case.weight"]
    trained = load_model(tmp_path / "out")
    torch.testing.assert_close(trained.lm_head.weight, older.lm_head.weight)
    assert trained.config.copy_case

    mismatched = build_model("practice", seed=0)
    save_model(mismatched, tmp_path / "practice")
    with pytest.raises(ValueError, match="invalid --init model: a 'practice' model that differs from preset 'tiny' in .*hidden_size"):
        train([data], tmp_path / "out2", TrainConfig(preset="tiny", steps=1, init=str(tmp_path / "practice")))
    assert not (tmp_path / "out2").exists()


def test_train_command_rejects_missing_data(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "no-such-demos"
    completed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "train", str(missing), "--preset", "tiny", "--out", str(tmp_path / "out"),
         "--steps", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert f"{missing}: not found" in completed.stderr
    assert "loss" not in completed.stderr  # no progress bar was drawn
    assert not (tmp_path / "out").exists()


def test_train_rejects_missing_init(tmp_path):
    import subprocess
    import sys

    write_demonstrations(tmp_path / "data", count=1)
    missing = tmp_path / "no-such-model"
    completed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "train", str(tmp_path / "data"), "--preset", "tiny", "--out",
         str(tmp_path / "out"), "--steps", "2", "--init", str(missing)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert f"{missing / 'config.json'}: missing" in completed.stderr
    assert not (tmp_path / "out").exists()

    save_model(build_model("tiny"), tmp_path / "tiny")
    completed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "train", str(tmp_path / "data"), "--preset", "practice", "--out",
         str(tmp_path / "out"), "--steps", "2", "--init", str(tmp_path / "tiny")],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "invalid --init model: a 'tiny' model that differs from preset 'practice'" in completed.stderr
    assert "loss" not in completed.stderr  # no progress bar was drawn
    assert not (tmp_path / "out").exists()


def test_train_bench_times_each_preset_and_precision(tmp_path):
    from tools.train_bench import bench_training

    write_demonstrations(tmp_path / "data", count=2)
    results = bench_training(
        [tmp_path / "data"], ["tiny", "tiny-transformer"], ["float32", "bfloat16"],
        TrainConfig(episodes_per_step=2, seed=0), warmup=0, repeats=2, plan_steps=100,
    )
    assert {row["batching"] for row in results["rows"]} == {"grouped"}
    rows = results["rows"]
    assert [(row["preset"], row["precision"]) for row in rows] == [
        ("tiny", "float32"), ("tiny", "bfloat16"), ("tiny-transformer", "float32"), ("tiny-transformer", "bfloat16"),
    ]
    for row in rows:
        assert len(row["step_seconds"]) == 2
        assert row["median_step_seconds"] > 0
        assert row["planned_hours"] == pytest.approx(100 * row["median_step_seconds"] / 3600, abs=2e-4)
        assert row["speed_vs_first"] == pytest.approx(rows[0]["median_step_seconds"] / row["median_step_seconds"], rel=0.01)
    # Every configuration times the same batch: 2 episodes of 3 actions each.
    assert {row["action_tokens_per_step"] for row in rows} == {rows[0]["action_tokens_per_step"]}
    assert rows[0]["action_tokens_per_step"] > 2 * 3
    assert rows[0]["parameters"] != rows[2]["parameters"]


def test_train_bench_command_writes_json(tmp_path):
    import json
    import subprocess
    import sys

    write_demonstrations(tmp_path / "data", count=1)
    command = [sys.executable, "-m", "agent.cli", "train-bench", str(tmp_path / "data"), "--presets", "tiny",
               "--episodes-per-step", "1", "--warmup", "0", "--repeats", "1"]
    completed = subprocess.run(command + ["--batchings", "grouped,one-pass", "--out", str(tmp_path / "bench.json")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    written = json.loads((tmp_path / "bench.json").read_text())
    assert [(row["precision"], row["batching"]) for row in written["rows"]] == [
        ("float32", "grouped"), ("float32", "one-pass"), ("bfloat16", "grouped"), ("bfloat16", "one-pass"),
    ]
    assert written["machine"]["torch"] == torch.__version__
    assert "s/step" in completed.stdout

    completed = subprocess.run(command + ["--precisions", "fp16"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "invalid precisions 'fp16'" in completed.stderr
    completed = subprocess.run(command + ["--batchings", "packed"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "invalid batchings 'packed': use grouped and/or one-pass" in completed.stderr
    completed = subprocess.run(command + ["--pass-overhead-tokens", "-1"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "invalid pass_overhead_tokens -1: use 0 or more" in completed.stderr
    missing = tmp_path / "no-such-demos"
    completed = subprocess.run(command[:4] + [str(missing)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert f"{missing}: not found" in completed.stderr
    for option, value in (("--threads", "-2"), ("--plan-steps", "-5")):
        completed = subprocess.run(command + [option, value], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert f"{value}: use 1 or more" in completed.stderr
