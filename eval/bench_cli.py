"""`holdfast bench`: throughput and memory of the hybrid against Transformer engines, measured
(`eval.bench`) or computed on paper (`--analytic`, `eval.analytic`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
from pathlib import Path

from eval.analytic import DTYPE_BYTES, analytic_report, parse_size
from eval.bench import ENGINES, BenchSpec, plot_results, report_steps, run_bench
from model.config import get_preset, preset_names

RESULTS_FILE = "results.json"
PLOT_FILE = "bench.png"


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--preset", default="small-bench", choices=preset_names(), help="model shape (default: small-bench)")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated engines to run (default: all of {','.join(ENGINES)})")
    parser.add_argument("--steps", type=int, default=64, help="agent steps per episode (default: 64)")
    parser.add_argument("--image-tokens", type=int, default=None,
                        help="image tokens per screenshot (default: the preset's vision settings)")
    parser.add_argument("--action-tokens", type=int, default=16, help="tokens generated per step (default: 16)")
    parser.add_argument("--concurrency", default="1",
                        help="comma-separated batch sizes of episodes run in lockstep, e.g. 1,4,16 (default: 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each step before the timed ones (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each step; the median is reported (default: 3)")
    parser.add_argument("--step-timeout", type=float, default=None,
                        help="seconds one run of a step may take before the engine is stopped (default: no limit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and image embeddings (default: 0)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu runs in float32, cuda in bfloat16 (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per engine process (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json and bench.png (default: runs/bench-<timestamp>)")
    parser.add_argument("--json", action="store_true", help="print the results object as JSON and nothing else on stdout")
    analytic = parser.add_argument_group("scale on paper (--analytic)")
    analytic.add_argument("--analytic", action="store_true",
                          help="compute weights, per-session state and sessions per GPU without running a model")
    analytic.add_argument("--gpu-memory", default="80GiB", help="GPU memory for --analytic, e.g. 80GiB or 141GB (default: 80GiB)")
    analytic.add_argument("--history-steps", type=int, default=64,
                          help="steps of history each session holds, for --analytic (default: 64)")
    analytic.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPE_BYTES),
                          help="weights and KV-cache dtype for --analytic; SSM states stay float32 (default: bfloat16)")
    return run


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"holdfast bench: {option} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"holdfast bench: {option} is empty")
    return values


def command_line(args: argparse.Namespace) -> str:
    """Return the command that reproduces this run, with every option spelled out."""
    parts = ["holdfast", "bench", "--preset", args.preset]
    if args.analytic:
        parts += ["--analytic", "--gpu-memory", args.gpu_memory, "--history-steps", str(args.history_steps),
                  "--dtype", args.dtype, "--action-tokens", str(args.action_tokens)]
    else:
        parts += ["--engines", args.engines, "--steps", str(args.steps), "--action-tokens", str(args.action_tokens),
                  "--concurrency", args.concurrency, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                  "--seed", str(args.seed), "--device", args.device]
        if args.step_timeout is not None:
            parts += ["--step-timeout", f"{args.step_timeout:g}"]
        if args.threads is not None:
            parts += ["--threads", str(args.threads)]
    if args.image_tokens is not None:
        parts += ["--image-tokens", str(args.image_tokens)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    # With --json, stdout carries the JSON object only; everything else goes to stderr.
    console = Console(stderr=args.json)
    if args.analytic:
        return _run_analytic(args, console)

    spec = BenchSpec(
        preset=args.preset,
        engines=[name.strip() for name in args.engines.split(",") if name.strip()],
        steps=args.steps,
        image_tokens=args.image_tokens,
        action_tokens=args.action_tokens,
        concurrency=_int_list(args.concurrency, "--concurrency"),
        warmup=args.warmup,
        repeats=args.repeats,
        step_timeout=args.step_timeout,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    try:
        spec.validate()
    except ValueError as error:
        console.print(f"[red]holdfast bench: {error}[/red]")
        return 2
    out = args.out or Path("runs") / f"bench-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)

    def progress(engine: str, concurrency: int, step: int, ms: float) -> None:
        console.print(f"[dim]{engine} x{concurrency} step {step}/{spec.steps}: {ms:.0f} ms[/dim]")

    try:
        results = run_bench(spec, command_line(args), on_step=progress)
    except RuntimeError as error:
        console.print(f"[red]holdfast bench: {error}[/red]")
        return 2
    results_path = out / RESULTS_FILE
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    plot_path = plot_results(results, out / PLOT_FILE)

    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    _print_results(console, results)
    console.print(f"results: {results_path}\nplot: {plot_path}")
    return 0


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _print_results(console, results: dict) -> None:
    from rich.table import Table

    workload = results["workload"]
    steps = report_steps(workload["steps"])
    table = Table(title=(
        f"holdfast bench: {results['preset']} on {results['device']} ({results['dtype']}), "
        f"{workload['image_tokens']} image + {workload['action_tokens']} action tokens per step"
    ))
    table.add_column("engine")
    table.add_column("batch", justify="right")
    table.add_column("params", justify="right")
    for step in steps:
        table.add_column(f"ms step {step}\n(min-max)", justify="right")
    table.add_column("tokens/s", justify="right")
    table.add_column(f"state MiB\nstep 1 / {steps[-1]}", justify="right")
    table.add_column("peak RSS\nMiB", justify="right")
    table.add_column("status")
    for name, engine in results["engines"].items():
        for concurrency, run in engine["runs"].items():
            cells = [name, concurrency, "-" if run["parameters"] is None else f"{run['parameters'] / 1e6:.1f}M"]
            for step in steps:
                median = run["ms_per_step"][step - 1]
                cells.append("-" if median is None else
                             f"{_ms(median)}\n({_ms(run['ms_min'][step - 1])}-{_ms(run['ms_max'][step - 1])})")
            tokens = run["tokens_per_s"]
            cells.append("-" if tokens is None else f"{tokens:,.0f}")
            cells.append(f"{_mib(run['state_bytes'][0])} / {_mib(run['state_bytes'][steps[-1] - 1])}")
            cells.append(_mib(run["peak_rss_bytes"]))
            status = run["status"] if run["status"] == "ok" else f"[red]{run['status']} at step {run['failed_at_step']}[/red]"
            cells.append(status)
            table.add_row(*cells)
    console.print(table)

    for key, ratio in results["throughput_ratio"].items():
        if ratio["overall"] is not None:
            console.print(
                f"hybrid / transformer throughput at concurrency {key}: {ratio['overall']:.2f}x overall, "
                f"{ratio['last_step']:.2f}x at step {ratio['steps_compared']}"
            )
    for check in results["targets"]:
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "[yellow]not measured[/yellow]"}[check["met"]]
        value = "" if check["value"] is None else f" ({check['value']:.3g})"
        console.print(f"{mark} {check['target']}{value}")
    for name, engine in results["engines"].items():
        console.print(f"[dim]{name}: {engine['description']}; pattern {engine['pattern']}[/dim]")
    console.print(f"[dim]{workload['weights']}; image tokens: {workload['image_embeddings']}; {workload['timing']}[/dim]")
    console.print(f"[dim]peak memory: {results['memory_method']}[/dim]")


def _run_analytic(args: argparse.Namespace, console) -> int:
    from rich.table import Table

    config = get_preset(args.preset)
    try:
        gpu_bytes = parse_size(args.gpu_memory)
        if args.image_tokens is not None:
            image_tokens = args.image_tokens
        elif config.vision is not None:
            image_tokens = config.vision.image_tokens
        else:
            raise ValueError(f"preset {args.preset!r} has no vision settings; pass --image-tokens")
        if config.is_transformer:
            raise ValueError(f"preset {args.preset!r} is a Transformer twin; give the hybrid preset, the twin is derived")
        report = analytic_report(config, gpu_bytes, args.history_steps, image_tokens, args.action_tokens, args.dtype)
    except ValueError as error:
        console.print(f"[red]holdfast bench --analytic: {error}[/red]")
        return 2
    report["command"] = command_line(args)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "analytic.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")

    gib = 2**30
    models = report["models"]
    table = Table(title=(
        f"{report['preset']}: per-session state (GiB) by steps, {report['tokens_per_step']} tokens per step, "
        f"{report['dtype']} weights and KV, float32 SSM state"
    ))
    table.add_column("steps", justify="right")
    table.add_column("tokens", justify="right")
    for name in models:
        table.add_column(name, justify="right")
    for index, row in enumerate(models["hybrid"]["memory_by_step"]):
        cells = [str(row["steps"]), f"{row['tokens']:,}"]
        cells += [f"{models[name]['memory_by_step'][index]['total_bytes'] / gib:.3f}" for name in models]
        table.add_row(*cells)
    console.print(table)

    summary = Table(title=f"fit on a {args.gpu_memory} GPU at {report['history_steps']} steps of history")
    for column in ("model", "parameters", "weights GiB", "SSM MiB", "conv MiB", "KV KiB/token", "session GiB", "sessions"):
        summary.add_column(column, justify="right" if column != "model" else "left")
    for name, model in models.items():
        last = model["memory_by_step"][-1]
        parameters = model["language_parameters"] + model["vision_parameters"]
        summary.add_row(
            name, f"{parameters / 1e9:.2f}B", f"{model['weights_bytes'] / gib:.1f}", _mib(last["ssm_bytes"]),
            _mib(last["conv_bytes"]), f"{model['kv_bytes_per_token'] / 1024:.0f}",
            f"{model['session_bytes_at_history'] / gib:.3f}", f"{model['sessions_per_gpu']:,}",
        )
    console.print(summary)
    console.print(f"[dim]{report['note']}[/dim]")
    return 0
