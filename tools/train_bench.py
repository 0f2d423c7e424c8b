"""Time training steps of several presets, precisions and batchings side by side on the same batches.

Each configuration gets its own model (random weights, one seed) and optimiser. Every round
draws a new batch, as training does, and times one step of each configuration on it. The
rounds go round-robin over the configurations, so a slow moment of a shared machine falls on
all of them alike, and the figures are medians over the repeats. A step is `training_step`, the
function `holdfast train` runs: augmentation, forward and backward pass, clipping, AdamW.
"""

from __future__ import annotations

import copy
import itertools
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from model.checkpoint import build_model
from model.config import preset_names
from tools.train import TrainConfig, check_settings, load_episodes, new_optimizer, training_step

PRECISIONS = ("float32", "bfloat16")
# "grouped" splits a batch into passes of similar length, as `holdfast train` does, and
# "one-pass" pads every episode to the batch's longest.
BATCHINGS = ("grouped", "one-pass")


def bench_training(data: list[str | Path], presets: list[str], precisions: list[str], config: TrainConfig,
                   warmup: int = 1, repeats: int = 3, plan_steps: int | None = None, progress=None,
                   batchings: tuple[str, ...] = ("grouped",)) -> dict:
    """Return per configuration the median seconds per optimiser step and the derived rates.

    `config` supplies the batch size, seed, device, augmentation and the grouped batching's
    pass cost; its preset, `bf16` and batching are replaced by each configuration's. With
    `plan_steps`, each row also gives the hours that many steps would take at the median rate.
    """
    if not presets or any(name not in preset_names() for name in presets):
        raise ValueError(f"invalid presets {','.join(presets)!r}: use names from {', '.join(preset_names())}")
    if not precisions or any(name not in PRECISIONS for name in precisions):
        raise ValueError(f"invalid precisions {','.join(precisions)!r}: use {' and/or '.join(PRECISIONS)}")
    if not batchings or any(name not in BATCHINGS for name in batchings):
        raise ValueError(f"invalid batchings {','.join(batchings)!r}: use {' and/or '.join(BATCHINGS)}")
    if warmup < 0:
        raise ValueError(f"invalid warmup {warmup}: use 0 or more")
    if repeats < 1:
        raise ValueError(f"invalid repeats {repeats}: use 1 or more")
    if plan_steps is not None and plan_steps < 1:
        raise ValueError(f"invalid plan_steps {plan_steps}: use 1 or more")
    check_settings(config)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r}: no CUDA device is visible to torch; use cpu")
    rows = []
    for preset in presets:
        model = build_model(preset, device=config.device, seed=config.seed)
        episodes, problems = load_episodes(data, model, config.coordinate_decimals, config.include_unsuccessful)
        if not episodes:
            raise ValueError(f"no usable episodes in {', '.join(map(str, data))}: {'; '.join(problems) or 'none found'}")
        # One batch per round for every configuration, drawn as the training loop draws its
        # batches. Grouping's gain depends on the mix of lengths, so one batch would not show it.
        order_rng = random.Random(config.seed)
        batches = [
            [episodes[order_rng.randrange(len(episodes))] for _ in range(config.episodes_per_step)]
            for _ in range(warmup + repeats)
        ]
        model.train()
        for precision, batching in itertools.product(precisions, batchings):
            run_config = replace(
                config, preset=preset, bf16=precision == "bfloat16",
                pass_overhead_tokens=config.pass_overhead_tokens if batching == "grouped" else None,
            )
            # A copy per configuration: each times its own optimiser steps from the same weights.
            row_model = copy.deepcopy(model)
            rows.append({
                "preset": preset, "precision": precision, "batching": batching, "model": row_model,
                "config": run_config, "optimizer": new_optimizer(row_model, run_config), "batches": batches,
                "seconds": [], "generator": torch.Generator().manual_seed(config.seed), "tokens": [],
                "parameters": sum(p.numel() for p in row_model.parameters()),
            })
        del model
    for round_index in range(warmup + repeats):
        for row in rows:
            _synchronize(config.device)
            started = time.perf_counter()
            _, tokens = training_step(
                row["model"], row["optimizer"], row["batches"][round_index], row["config"], row["generator"]
            )
            _synchronize(config.device)
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                row["seconds"].append(elapsed)
                row["tokens"].append(tokens)
            if progress is not None:
                progress(row["preset"], row["precision"], row["batching"], round_index - warmup, elapsed)
    base = statistics.median(rows[0]["seconds"])
    results = []
    for row in rows:
        median = statistics.median(row["seconds"])
        # Every row times the same batches, so every row has the same token counts.
        tokens = statistics.mean(row["tokens"])
        result = {
            "preset": row["preset"],
            "precision": row["precision"],
            "batching": row["batching"],
            "parameters": row["parameters"],
            "episodes_per_step": config.episodes_per_step,
            "action_tokens_per_step": round(tokens, 1),
            "median_step_seconds": round(median, 4),
            "step_seconds": [round(value, 4) for value in row["seconds"]],
            "episodes_per_second": round(config.episodes_per_step / median, 3),
            "action_tokens_per_second": round(sum(row["tokens"]) / sum(row["seconds"]), 1),
            "speed_vs_first": round(base / median, 3),
        }
        if plan_steps is not None:
            result["planned_hours"] = round(plan_steps * median / 3600, 4)
        results.append(result)
    return {
        "rows": results,
        "settings": {
            "presets": presets, "precisions": precisions, "batchings": list(batchings),
            "pass_overhead_tokens": config.pass_overhead_tokens, "episodes_per_step": config.episodes_per_step,
            "warmup": warmup, "repeats": repeats, "seed": config.seed, "device": config.device,
            "plan_steps": plan_steps, "threads": torch.get_num_threads(),
        },
    }


# NOTE: the CUDA path (synchronising before and after each timed step) has not run on a GPU yet.
def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
