"""`holdfast bench` end to end on the tiny preset: every engine in its own worker process."""

import io
import json
import sys

import pytest
import torch

from agent.cli import main
from eval.bench import ENGINES, llama_intermediate_size
from model.config import get_preset

STEPS = 3
# tiny: 16 image tokens per screenshot, so a step is <step> <image> 16 x image </image> <action> + 4 action tokens.
STEP_TOKENS = 4 + 16 + 4


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    capture = pytest.MonkeyPatch()
    stdout = io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    try:
        code = main([
            "bench", "--preset", "tiny", "--steps", str(STEPS), "--action-tokens", "4",
            "--warmup", "1", "--repeats", "2", "--threads", "1", "--out", str(out), "--json",
        ])
    finally:
        capture.undo()
    assert code == 0
    return out, stdout.getvalue()


def test_json_stdout_equals_results_file(tiny_results):
    out, stdout = tiny_results
    printed = json.loads(stdout)  # nothing but the object on stdout
    written = json.loads((out / "results.json").read_text())
    assert printed == written


def test_results_have_provenance(tiny_results):
    results = json.loads((tiny_results[0] / "results.json").read_text())
    assert results["preset"] == "tiny"
    assert results["command"].startswith("holdfast bench --preset tiny")
    assert results["code_version"]
    assert results["date"]
    assert results["machine"]["cpu_count"] >= 1
    assert results["device"] == "cpu"
    assert results["workload"]["tokens_per_step"] == STEP_TOKENS


def test_every_engine_completes(tiny_results):
    results = json.loads((tiny_results[0] / "results.json").read_text())
    assert list(results["engines"]) == list(ENGINES)
    for name, engine in results["engines"].items():
        run = engine["runs"]["1"]
        assert run["status"] == "ok", (name, run["message"])
        assert run["steps_completed"] == STEPS
        assert len(run["ms_per_step"]) == STEPS
        assert all(low <= mid <= high for low, mid, high in zip(run["ms_min"], run["ms_per_step"], run["ms_max"]))
        assert all(ms > 0 for ms in run["ms_per_step"])
        assert run["tokens_per_s"] > 0
        assert run["peak_rss_bytes"] >= run["rss_after_build_bytes"] > 0
        assert run["parameters"] > 0


def test_state_bytes_follow_cache_layout(tiny_results):
    engines = json.loads((tiny_results[0] / "results.json").read_text())["engines"]
    # tiny: kv heads 2 x head dim 16 x float32, keys and values: 256 bytes per token and attention layer.
    per_token_per_layer = 2 * 2 * 16 * 4
    twin_step = STEP_TOKENS * 5 * per_token_per_layer  # the twin has 5 attention layers
    full_step = STEP_TOKENS * 2 * per_token_per_layer  # the hybrid has 2
    for name, step_bytes in (("transformer", twin_step), ("hf-llama", twin_step),
                             ("hybrid-full", full_step), ("hf-nemotron-h", full_step)):
        sizes = engines[name]["runs"]["1"]["state_bytes"]
        assert [b - a for a, b in zip(sizes, sizes[1:])] == [step_bytes] * (STEPS - 1), name
    assert engines["transformer"]["runs"]["1"]["state_bytes"][0] == twin_step
    # Window 64 tokens: 24, 48, then 72 tokens seen, so the third step holds the cap of 64.
    hybrid = engines["hybrid"]["runs"]["1"]["state_bytes"]
    mamba = 3 * (4 * 32 * 16 * 4 + (128 + 2 * 2 * 16) * 3 * 4)  # 3 Mamba layers: SSM + conv state
    assert hybrid == [mamba + 2 * tokens * per_token_per_layer for tokens in (24, 48, 64)]


def test_throughput_ratio_and_plot(tiny_results):
    out, _ = tiny_results
    results = json.loads((out / "results.json").read_text())
    ratio = results["throughput_ratio"]["1"]
    assert ratio["steps_compared"] == STEPS
    hybrid = results["engines"]["hybrid"]["runs"]["1"]
    twin = results["engines"]["transformer"]["runs"]["1"]
    assert ratio["overall"] == pytest.approx(hybrid["tokens_per_s"] / twin["tokens_per_s"])
    assert ratio["last_step"] == pytest.approx(twin["ms_per_step"][-1] / hybrid["ms_per_step"][-1])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_doubles_state(tmp_path, capsys):
    code = main([
        "bench", "--preset", "tiny", "--engines", "transformer", "--steps", "2", "--action-tokens", "4",
        "--concurrency", "2", "--repeats", "1", "--out", str(tmp_path),
    ])
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())["engines"]["transformer"]["runs"]["2"]
    assert run["state_bytes"] == [2 * STEP_TOKENS * 5 * 256, 4 * STEP_TOKENS * 5 * 256]


def test_step_timeout_reported_at_step(tmp_path, capsys):
    code = main([
        "bench", "--preset", "tiny", "--engines", "hybrid", "--steps", "2", "--repeats", "1",
        "--step-timeout", "0.000001", "--out", str(tmp_path),
    ])
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())["engines"]["hybrid"]["runs"]["1"]
    assert run["status"] == "timeout"
    assert run["failed_at_step"] == 1
    assert run["ms_per_step"] == [None, None]
    assert run["tokens_per_s"] is None
    assert "timeout" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_cuda_absent_is_clear_error(tmp_path, capsys):
    code = main(["bench", "--preset", "tiny", "--device", "cuda", "--steps", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_unknown_engine_rejected(tmp_path, capsys):
    assert main(["bench", "--preset", "tiny", "--engines", "hybrid,vllm", "--out", str(tmp_path)]) == 2
    assert "unknown engines ['vllm']" in capsys.readouterr().out


def test_llama_mlp_width_matches_twin_weights():
    twin = get_preset("small-bench").transformer_twin()
    # 9 MLP layers x 2 matrices x 2560 = 11 Llama layers x 3 matrices x width: 46080 / 33 = 1396.4.
    assert llama_intermediate_size(twin) == 1396
