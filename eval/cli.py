"""`holdfast eval`: score a policy on recorded trajectories offline (see docs/eval.md)."""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

logger = logging.getLogger(__name__)

POLICIES = ("model", "transformer", "oracle", "predictions")
# Keys of results.json that --json prints: the aggregates, without configuration and machine.
AGGREGATE_KEYS = (
    "trajectories", "steps", "step_score_mean", "step_success_rate", "episode_success_rate",
    "android_control_click_accuracy", "android_control_clicks", "per_action_type", "per_trajectory",
    "latency_s", "state_bytes", "errors",
)


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="trajectory files or folders (Holdfast, AgentNetBench .json, OSWorld traj.jsonl folders)")
    parser.add_argument("--policy", choices=POLICIES, default="model",
                        help="what predicts the actions: the hybrid model, the Transformer baseline, the ground "
                             "truth itself (oracle), or a predictions file (default: model)")
    parser.add_argument("--model", metavar="PATH_OR_PRESET",
                        help="checkpoint folder or preset name for --policy model/transformer "
                             "(default: the shipped model; for transformer, PRESET-transformer)")
    parser.add_argument("--predictions", metavar="FILE", type=Path,
                        help="JSONL file of predicted actions for --policy predictions")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="folder for results.json, steps.jsonl and report.md, written as results come")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out, skipping trajectories it already finished")
    parser.add_argument("--json", action="store_true",
                        help="print the aggregates as one JSON object on standard output (and nothing else)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the model (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    return run


def run(args: argparse.Namespace) -> int:
    # With --json, standard output carries only the JSON object; everything else goes to stderr.
    console = Console(stderr=args.json)
    errors = Console(stderr=True)
    if args.resume and args.out is None:
        errors.print("[red]--resume needs --out DIR (the folder of the run to continue)[/red]")
        return 2
    if args.policy == "predictions" and args.predictions is None:
        errors.print("[red]--policy predictions needs --predictions FILE[/red]")
        return 2

    from eval.datasets import load_episodes
    from eval.replay import PredictionsError, run_replay
    from eval.results import ResumeError, RunResults

    try:
        model = _model_name(args) if args.policy in ("model", "transformer") else None
    except ValueError as error:
        errors.print(f"[red]{error}[/red]")
        return 2
    configuration = {
        "policy": args.policy,
        "model": model,
        "predictions": str(args.predictions) if args.policy == "predictions" else None,
        "paths": [str(path) for path in args.paths],
        "seed": args.seed,
        "device": args.device,
    }
    try:
        results = RunResults(args.out, configuration, resume=args.resume)
    except ResumeError as error:
        errors.print(f"[red]{error}[/red]")
        return 2
    try:
        policy = _make_policy(args, configuration["model"])
    except (PredictionsError, FileNotFoundError, ValueError) as error:
        errors.print(f"[red]cannot create the {args.policy} policy: {error}[/red]")
        return 2

    episodes, load_errors = load_episodes(args.paths)
    for error in load_errors:
        results.add_error(error)
    if args.policy == "predictions":
        # A trajectory id that matches no loaded trajectory is almost always a typo, and its
        # predictions would otherwise be ignored without a word.
        known = {episode.trajectory_id for episode in episodes}
        unmatched = sorted({trajectory for trajectory, _ in policy.predictions} - known)
        if unmatched:
            logger.warning(
                "%d trajectory ids in %s match no loaded trajectory: %s",
                len(unmatched), args.predictions, ", ".join(unmatched[:5]),
            )
    pending = [episode for episode in episodes if not results.is_finished(episode.trajectory_id)]
    if len(pending) < len(episodes):
        console.print(f"resuming: {len(episodes) - len(pending)} finished trajectories skipped")

    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=errors, transient=args.json,
    )
    with progress:
        bar = progress.add_task("replaying", total=sum(len(episode.steps) for episode in pending))

        def on_step(record: dict[str, Any]) -> None:
            results.add_step(record)
            progress.update(bar, advance=1, description=f"{record['trajectory_id']} step {record['step']}")

        def on_error(episode, error) -> None:
            results.add_error(error, trajectory_id=episode.trajectory_id)

        try:
            run_replay(
                pending, policy,
                on_step=on_step,
                on_trajectory=lambda episode, records: results.finish_trajectory(episode.trajectory_id, records),
                on_error=on_error,
            )
        except KeyboardInterrupt:
            results.close(complete=False)
            hint = f"; continue with --resume --out {args.out}" if args.out is not None else ""
            errors.print(f"[yellow]interrupted{hint}[/yellow]")
            return 130
    summary = results.close(complete=True)

    if args.json:
        print(json.dumps({key: summary[key] for key in AGGREGATE_KEYS}))
    else:
        _print_summary(console, summary, args.out)
    return 0 if not summary["errors"] else 1


def _model_name(args: argparse.Namespace) -> str | None:
    """Return what load_policy gets: the Transformer baseline of a preset is PRESET-transformer."""
    from model.policy import transformer_model

    return transformer_model(args.model) if args.policy == "transformer" else args.model


def _make_policy(args: argparse.Namespace, model: str | None):
    from eval.replay import OraclePolicy, PredictionsPolicy, load_predictions

    random.seed(args.seed)
    if args.policy == "oracle":
        return OraclePolicy()
    if args.policy == "predictions":
        return PredictionsPolicy(load_predictions(args.predictions))

    import torch

    from model.policy import load_policy

    torch.manual_seed(args.seed)
    return load_policy(model, device=args.device, seed=args.seed)


def _print_summary(console: Console, summary: dict[str, Any], out: Path | None) -> None:
    table = Table(title="Offline replay evaluation")
    table.add_column("trajectory", no_wrap=True)
    table.add_column("steps", justify="right")
    table.add_column("step score", justify="right")
    table.add_column("step success", justify="right")
    table.add_column("episode success", justify="right")
    table.add_column("latency (s)", justify="right")
    table.add_column("state bytes", justify="right")
    for trajectory_id, values in summary["per_trajectory"].items():
        latency = values["latency_s_mean"]
        table.add_row(
            trajectory_id, str(values["steps"]), f"{values['step_score_mean']:.3f}",
            f"{values['step_success_rate']:.3f}", "yes" if values["episode_success"] else "no",
            "-" if latency is None else f"{latency:.3f}", str(values["state_bytes_max"]),
        )
    if summary["steps"]:
        table.add_section()
        latency = summary["latency_s"]
        table.add_row(
            "all", str(summary["steps"]), f"{summary['step_score_mean']:.3f}",
            f"{summary['step_success_rate']:.3f}", f"{summary['episode_success_rate']:.3f}",
            "-" if latency is None else f"{latency['mean']:.3f}",
            str(int(summary["state_bytes"]["max"])) if summary["state_bytes"] else "-",
        )
    console.print(table)

    types = Table(title="Per action type")
    for column in ("type", "actions", "score mean", "success rate"):
        types.add_column(column, justify="left" if column == "type" else "right")
    for kind, values in summary["per_action_type"].items():
        types.add_row(kind, str(values["count"]), f"{values['score_mean']:.3f}", f"{values['success_rate']:.3f}")
    console.print(types)
    if summary["android_control_click_accuracy"] is not None:
        console.print(f"AndroidControl click accuracy: {summary['android_control_click_accuracy']:.3f} "
                      f"over {summary['android_control_clicks']} clicks")
    for error in summary["errors"]:
        where = error["source"] if error["step"] is None else f"{error['source']} step {error['step']}"
        console.print(f"[yellow]skipped[/yellow] {where}: {error['message']}")
    if out is not None:
        console.print(f"results written to {out}")

