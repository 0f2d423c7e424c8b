"""`holdfast train-bench`: time training steps of presets, precisions and batchings side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser):
    from tools.train import TrainConfig

    defaults = TrainConfig()
    parser.add_argument("data", nargs="+", metavar="DATA_DIR", help="trajectory folders, or folders that contain them")
    parser.add_argument("--presets", default="practice,practice-transformer",
                        help="comma-separated presets to time (default: practice,practice-transformer)")
    parser.add_argument("--precisions", default="float32,bfloat16",
                        help="comma-separated: float32, bfloat16 (autocast, as --bf16 trains) (default: both)")
    parser.add_argument("--batchings", default="grouped",
                        help="comma-separated: grouped (passes of similar length, as training runs), "
                             "one-pass (every episode padded to the longest) (default: grouped)")
    parser.add_argument("--pass-overhead-tokens", type=int, metavar="N", default=defaults.pass_overhead_tokens,
                        help=f"the grouped batching's cost of one more pass, as in holdfast train "
                             f"(default {defaults.pass_overhead_tokens})")
    parser.add_argument("--episodes-per-step", type=int, default=8, help="episodes in the timed batch (default: 8)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration before the timed ones (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per configuration; the median is reported (default: 3)")
    parser.add_argument("--plan-steps", type=int, default=None,
                        help="also print the hours this many steps would take at each median (e.g. 900)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the weights, batch and augmentation")
    parser.add_argument("--device", default=defaults.device, help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON and nothing else on stdout")
    return run


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from eval.provenance import code_version, machine_info, now_iso
    from tools.train import TrainConfig, find_trajectories
    from tools.train_bench import bench_training

    console = Console(stderr=True)
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    batchings = tuple(name.strip() for name in args.batchings.split(",") if name.strip())
    # A missing or empty data folder is reported before any model is built.
    find_trajectories(args.data)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"invalid --threads {args.threads}: use 1 or more")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = TrainConfig(episodes_per_step=args.episodes_per_step, seed=args.seed, device=args.device,
                         pass_overhead_tokens=args.pass_overhead_tokens)

    def progress(preset: str, precision: str, batching: str, repeat: int, seconds: float) -> None:
        label = "warm-up" if repeat < 0 else f"repeat {repeat + 1}/{args.repeats}"
        if not args.json:
            console.print(f"{preset} {precision} {batching} {label}: {seconds:.2f} s")

    results = bench_training(
        args.data, presets, precisions, config, warmup=args.warmup, repeats=args.repeats,
        plan_steps=args.plan_steps, progress=progress, batchings=batchings,
    )
    results.update(data=[str(path) for path in args.data], code_version=code_version(), machine=machine_info(), date=now_iso())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results))
        return 0
    table = Table(title=f"training step, {args.episodes_per_step} episodes, median of {args.repeats}")
    table.add_column("preset", no_wrap=True)
    table.add_column("precision", no_wrap=True)
    table.add_column("batching", no_wrap=True)
    for column in ("s/step", "ep/s", "action tok/s", "speed"):
        table.add_column(column, justify="right")
    if args.plan_steps:
        table.add_column(f"h/{args.plan_steps} steps", justify="right")
    for row in results["rows"]:
        cells = [row["preset"], row["precision"], row["batching"], f"{row['median_step_seconds']:.2f}", f"{row['episodes_per_second']:.2f}",
                 f"{row['action_tokens_per_second']:.0f}", f"{row['speed_vs_first']:.2f}x"]
        if args.plan_steps:
            cells.append(f"{row['planned_hours']:.3g}")
        table.add_row(*cells)
    Console().print(table)
    if args.out is not None:
        console.print(f"results written to {args.out}")
    return 0
