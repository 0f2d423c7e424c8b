"""`holdfast train`: behavioural cloning from Holdfast trajectories."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser):
    from agent.trajectory import UNSUCCESSFUL_STATUSES
    from tools.train import LOSS_AVERAGES, TrainConfig

    defaults = TrainConfig()
    parser.add_argument("data", nargs="+", metavar="DATA_DIR", help="trajectory folders, or folders that contain them")
    parser.add_argument("--preset", default=defaults.preset, help="model preset to train (default practice; practice-transformer for the twin); with --init, the preset of that folder")
    parser.add_argument("--out", required=True, help="output model folder (config.json, model.safetensors, trainer state)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimiser steps (default {defaults.steps})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"peak learning rate (default {defaults.lr})")
    parser.add_argument("--episodes-per-step", type=int, default=defaults.episodes_per_step, help="episodes per optimiser step")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights, episode order and augmentation")
    parser.add_argument("--save-every", type=int, default=defaults.save_every, help="checkpoint interval in steps")
    parser.add_argument("--device", default=defaults.device, help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument(
        "--coordinate-decimals", type=int, default=defaults.coordinate_decimals,
        help=f"round demonstrated coordinates to this many decimals (default {defaults.coordinate_decimals}; 3 keeps them)",
    )
    parser.add_argument("--no-augment", action="store_true", help="turn off pixel shift, colour jitter and text substitution")
    parser.add_argument("--init", metavar="MODEL_DIR", help="start from this model folder's weights instead of random ones (fresh optimiser; new heads start at random)")
    parser.add_argument(
        "--attention-window", type=int, metavar="N",
        help="attention window in tokens to train with and save, instead of the preset's; the model then runs with it",
    )
    parser.add_argument(
        "--loss-average", choices=LOSS_AVERAGES, default=defaults.loss_average,
        help="weigh each episode the same (episodes, the default) or each action target the same (tokens)",
    )
    parser.add_argument(
        "--include-unsuccessful", action="store_true",
        help=f"also train on trajectories whose task.json status is one of {', '.join(sorted(UNSUCCESSFUL_STATUSES))}",
    )
    parser.add_argument(
        "--pass-overhead-tokens", type=int, metavar="N", default=defaults.pass_overhead_tokens,
        help=f"split each step's episodes into padded passes of similar length wherever that saves more than N "
             f"padded tokens per extra pass (default {defaults.pass_overhead_tokens}; the loss is the same either way)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the trainer state in --out")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return run


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from tools.train import TrainConfig, check_init, check_resumed_objective, find_trajectories, resumes, train

    config = TrainConfig(
        preset=args.preset, steps=args.steps, lr=args.lr, episodes_per_step=args.episodes_per_step,
        seed=args.seed, save_every=args.save_every, device=args.device, bf16=args.bf16,
        coordinate_decimals=args.coordinate_decimals, init=args.init, attention_window=args.attention_window,
        include_unsuccessful=args.include_unsuccessful, loss_average=args.loss_average,
        pass_overhead_tokens=args.pass_overhead_tokens,
    )
    if args.no_augment:
        config.shift_pixels, config.color_jitter, config.text_substitution = 0, 0.0, 0.0
    # A missing or empty data folder is reported before the model is built and the bar drawn.
    find_trajectories(args.data)
    if args.init is not None and not resumes(Path(args.out), args.resume):
        from model.config import get_preset

        # A missing, unreadable or mismatched --init folder is named before the model is built.
        check_init(Path(args.init), get_preset(args.preset))
    if resumes(Path(args.out), args.resume):
        check_resumed_objective(Path(args.out), config)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.0f} action tok/s"),
        TimeRemainingColumn(), console=console, disable=args.json,
    ) as progress:
        bar = progress.add_task("train", total=config.steps, loss=float("nan"), rate=0.0)

        def report(step: int, loss: float, rate: float) -> None:
            progress.update(bar, completed=step, loss=loss, rate=rate)

        summary = train(args.data, args.out, config, resume=args.resume, progress=report)
    if args.json:
        print(json.dumps(summary))
    else:
        started = f" from {summary['init']}" if summary["init"] else ""
        console.print(f"trained {summary['steps']} steps{started} on {summary['episodes']} episodes in {summary['seconds']} s; "
                      f"loss {summary['first_loss']} -> {summary['final_loss']}; model in {summary['out']}")
    return 0
