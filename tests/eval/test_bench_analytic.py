"""Memory arithmetic of `holdfast bench --analytic` against hand-computed values and real models."""

import json

import pytest
import torch

from agent.cli import main
from eval.analytic import (
    analytic_report,
    kv_bytes_per_token,
    language_parameters,
    parse_size,
    session_memory,
    sessions_that_fit,
    tokens_per_step,
    vision_parameters,
)
from model.config import get_preset, preset_names
from model.hybrid import HoldfastModel

GIB = 2**30


@pytest.mark.parametrize("name", preset_names())
def test_parameter_count_matches_model(name):
    config = get_preset(name)
    with torch.device("meta"):
        model = HoldfastModel(config)
    assert language_parameters(config) == model.num_parameters("language")
    assert vision_parameters(config.vision, config.hidden_size) == model.num_parameters("vision")


def test_nano_12b_ssm_and_conv_state():
    config = get_preset("nano-12b")
    memory = session_memory(config, steps=1, step_tokens=276)
    # 28 Mamba layers x 128 heads x head dim 80 x state 128, float32.
    assert memory.ssm_bytes == 28 * 128 * 80 * 128 * 4
    assert memory.ssm_bytes == 140 * 2**20
    # conv channels: d_inner 128*80 = 10240 plus B and C, 2 x 8 groups x 128; kernel 4 keeps 3 columns, bf16.
    assert memory.conv_bytes == 28 * (10240 + 2 * 8 * 128) * 3 * 2


def test_nano_12b_kv_per_token():
    config = get_preset("nano-12b")
    # 6 attention layers x (keys + values) x 8 kv heads x head dim 128 x 2 bytes = 24 KiB.
    assert kv_bytes_per_token(config) == 6 * 2 * 8 * 128 * 2 == 24 * 1024
    # The twin turns the 28 Mamba layers into attention: 34 attention layers.
    assert kv_bytes_per_token(config.transformer_twin()) == 34 * 2 * 8 * 128 * 2
    assert kv_bytes_per_token(config, "float32") == 48 * 1024


def test_window_caps_kv_cache():
    config = get_preset("nano-12b")  # window 8192 tokens
    short = session_memory(config, steps=10, step_tokens=276)
    long = session_memory(config, steps=100, step_tokens=276)
    assert short.kv_bytes == 2760 * 24 * 1024
    assert long.kv_bytes == 8192 * 24 * 1024
    full = session_memory(config.with_window(None), steps=100, step_tokens=276)
    assert full.kv_bytes == 27600 * 24 * 1024


def test_twin_state_grows_linearly():
    twin = get_preset("nano-12b").transformer_twin()
    sizes = [session_memory(twin, steps, 276).total_bytes for steps in (1, 2, 3, 50)]
    per_step = 276 * 34 * 2 * 8 * 128 * 2
    assert sizes[:3] == [per_step, 2 * per_step, 3 * per_step]
    assert sizes[3] == 50 * per_step


def test_sessions_that_fit_hand_values():
    assert sessions_that_fit(80 * GIB, 20 * GIB, GIB) == 60
    assert sessions_that_fit(80 * GIB, 20 * GIB, 7 * GIB) == 8  # 60 / 7 rounds down
    assert sessions_that_fit(10 * GIB, 20 * GIB, GIB) == 0


def test_report_nano_12b_fit():
    config = get_preset("nano-12b")
    with torch.device("meta"):
        parameters = HoldfastModel(config).num_parameters()
    report = analytic_report(config, 80 * GIB, history_steps=64, image_tokens=256, action_tokens=16)
    hybrid = report["models"]["hybrid"]
    assert report["tokens_per_step"] == 4 + 256 + 16
    assert hybrid["weights_bytes"] == parameters * 2
    # 64 steps of 276 tokens = 17664 tokens, more than the 8192-token window.
    session = 28 * 128 * 80 * 128 * 4 + 28 * 12288 * 3 * 2 + 8192 * 24 * 1024
    assert hybrid["session_bytes_at_history"] == session
    assert hybrid["sessions_per_gpu"] == (80 * GIB - parameters * 2) // session
    assert [row["steps"] for row in hybrid["memory_by_step"]] == [1, 8, 16, 32, 64]


def test_tokens_per_step_counts_special_tokens():
    assert tokens_per_step(256, 16) == 276


@pytest.mark.parametrize(
    "text, expected",
    [("80GiB", 80 * GIB), ("141GB", 141 * 10**9), ("512 MiB", 512 * 2**20), ("1.5GiB", 3 * GIB // 2), ("4096", 4096)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["eighty", "80XB", "", "GiB"])
def test_parse_size_rejects_invalid(text):
    with pytest.raises(ValueError, match="invalid memory size"):
        parse_size(text)


def test_cli_analytic_json(capsys):
    code = main(["bench", "--analytic", "--preset", "nano-12b", "--gpu-memory", "141GB", "--history-steps", "100", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpu_memory_bytes"] == 141 * 10**9
    assert report["history_steps"] == 100
    assert report["models"]["hybrid"]["kv_bytes_per_token"] == 24 * 1024
    assert report["models"]["transformer"]["sessions_per_gpu"] < report["models"]["hybrid"]["sessions_per_gpu"]


def test_cli_analytic_rejects_bad_gpu_memory(capsys):
    assert main(["bench", "--analytic", "--preset", "nano-12b", "--gpu-memory", "lots"]) == 2
    assert "invalid memory size 'lots'" in capsys.readouterr().out
