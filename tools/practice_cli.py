"""`holdfast practice`: the MiniWoB++ practice desktop (start, stop, record, run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_EPISODES = 50
DEFAULT_TRAIN_SEED = 0
DEFAULT_EVAL_SEED = 1_000_000  # tools.practice_run.EVAL_SEED_START, repeated to keep --help light


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--runtime-dir",
        default=None,
        help="folder for the desktop's state file and logs "
        "(default: $HOLDFAST_PRACTICE_DIR, $XDG_RUNTIME_DIR/holdfast-practice or /tmp/holdfast-practice-UID)",
    )
    commands = parser.add_subparsers(dest="practice_command", metavar="COMMAND", required=True)

    start = commands.add_parser("start", help="start Xvfb and Chromium; print the DISPLAY to use")
    start.add_argument("--scale", type=int, default=2, help="device scale factor, physical pixels per CSS pixel (default 2)")
    start.set_defaults(practice_handler=_start)

    stop = commands.add_parser("stop", help="stop the Xvfb and Chromium that start started")
    stop.set_defaults(practice_handler=_stop)

    for name, help_text in (
        ("record", "record the expert's successful episodes as trajectories (training seeds)"),
        ("run", "run and score a policy on held-out seeds, recording every episode"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("tasks", nargs="+", metavar="TASK", help="MiniWoB++ task names, e.g. click-button")
        command.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="episodes per task")
        command.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_TRAIN_SEED if name == "record" else DEFAULT_EVAL_SEED,
            help="seed of the first episode; episode i uses SEED+i "
            f"(below {DEFAULT_EVAL_SEED} for record, {DEFAULT_EVAL_SEED} or above for run)",
        )
        command.add_argument("--out", type=Path, required=name == "record", help="folder for the trajectories (TASK/seed-SEED)")
        command.add_argument("--max-steps", type=int, default=10, help="actions per episode before it counts as failed")
        command.add_argument("--episode-seconds", type=float, default=60.0, help="MiniWoB episode time limit in seconds")
        command.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        if name == "record":
            command.add_argument("--keep-failures", action="store_true", help="keep unsolved episodes too")
            command.set_defaults(practice_handler=_record, policy="expert", model=None, device="cpu")
        else:
            command.add_argument("--policy", choices=("expert", "model", "transformer"), default="expert", help="who acts")
            command.add_argument("--model", default=None, help="model folder or preset for --policy model/transformer")
            command.add_argument("--device", default="cpu", help="torch device for model policies")
            command.add_argument(
                "--attention-window", type=_window, default="config", metavar="N|none",
                help="tokens each attention layer keeps, overriding the model's setting; none keeps all",
            )
            command.set_defaults(practice_handler=_run, keep_failures=True)
    return _dispatch


def _dispatch(args: argparse.Namespace) -> int:
    return int(args.practice_handler(args) or 0)


def _start(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tools.practice_desktop import DesktopError, start_desktop

    console = Console()
    try:
        state, started = start_desktop(args.runtime_dir, scale=args.scale)
    except (DesktopError, ValueError) as error:
        console.print(f"[red]practice start failed:[/] {error}")
        return 1
    verb = "started" if started else "already running"
    console.print(f"practice desktop {verb}: {state.screen_width}x{state.screen_height} screen, scale {state.scale}")
    console.print(f"export DISPLAY={state.display} XAUTHORITY={state.xauthority}", highlight=False, soft_wrap=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tools.practice_desktop import stop_desktop

    stopped = stop_desktop(args.runtime_dir)
    Console().print("practice desktop stopped" if stopped else "no practice desktop was running")
    return 0


def _record(args: argparse.Namespace) -> int:
    return _episodes(args, purpose="train")


def _run(args: argparse.Namespace) -> int:
    return _episodes(args, purpose="eval")


def _make_policy_factory(args: argparse.Namespace, session):
    if args.policy == "expert":
        from tools.expert import ExpertPolicy

        return lambda: ExpertPolicy(session.env, session.mapping, session.geometry)

    from model.policy import load_policy

    model = _resolve_model(args)
    return lambda: load_policy(model, device=args.device, attention_window=args.attention_window)


def _resolve_model(args: argparse.Namespace) -> str | None:
    """Return the model folder or preset the policy loads, with defaults applied, or None for the expert."""
    if args.policy == "expert":
        return None
    if args.policy == "model":
        from model.policy import default_model

        return args.model or default_model()
    from model.policy import transformer_model

    return transformer_model(args.model)


def _window(text: str) -> int | None | str:
    # argparse also passes the default through here: "config" keeps the model's own window.
    if text.lower() in ("none", "config"):
        return None if text.lower() == "none" else "config"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid attention window {text!r}: give a positive number of tokens or none") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid attention window {value}: must be positive")
    return value


def _episodes(args: argparse.Namespace, purpose: str) -> int:
    import tempfile

    from rich.console import Console

    from tools.expert import EXPERT_TASKS
    from tools.practice_desktop import DesktopError, read_state, runtime_dir, start_desktop, state_is_healthy, stop_desktop
    from tools.practice_run import PracticeSession, SeedSplitError, check_seeds, run_tasks

    console = Console(stderr=args.json)
    if args.episodes < 1 or args.max_steps < 1:
        console.print(f"[red]invalid --episodes {args.episodes} or --max-steps {args.max_steps}: both must be >= 1[/]")
        return 2
    try:
        check_seeds(args.seed, args.episodes, purpose)
    except SeedSplitError as error:
        console.print(f"[red]{error}[/]")
        return 2
    if args.policy == "expert":
        unknown = [task for task in args.tasks if task not in EXPERT_TASKS]
        if unknown:
            console.print(f"[red]the expert has no script for {', '.join(unknown)}; it knows {', '.join(EXPERT_TASKS)}[/]")
            return 2
    try:
        _resolve_model(args)
    except ValueError as error:
        # Checked before the desktop starts, so a wrong --model costs no Xvfb or Chromium start.
        console.print(f"[red]{error}[/]")
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="holdfast-practice-run-"))

    # Use the running desktop, or start one for this command and stop it afterwards.
    folder = runtime_dir(args.runtime_dir)
    state = read_state(folder)
    own_desktop = state is None or not state_is_healthy(state)
    try:
        if own_desktop:
            state, _ = start_desktop(folder)
    except DesktopError as error:
        console.print(f"[red]cannot start the practice desktop:[/] {error}")
        return 1
    session = None
    results = []

    def show(result) -> None:
        results.append(result)
        if not args.json:
            mark = "[green]ok[/]" if result.success else "[red]fail[/]"
            console.print(f"{result.task} seed {result.seed}: {mark} raw {result.raw_reward:+.2f}, {result.steps} steps")

    try:
        session = PracticeSession(state, episode_seconds=args.episode_seconds)
        session.calibrate(args.tasks[0])
        make_policy = _make_policy_factory(args, session)
        run_tasks(
            session, args.tasks, args.episodes, args.seed, make_policy, out,
            keep_failures=args.keep_failures, max_steps=args.max_steps, on_episode=show,
        )
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C or SIGTERM: the finished episodes still get their summary, marked as partial.
        if results:
            _write_summary(out, results, args, session, interrupted=True)
            console.print(f"[yellow]interrupted after {len(results)} episodes; partial summary in {out / 'summary.json'}[/]")
        raise
    finally:
        if session is not None:
            session.close()
        if own_desktop:
            stop_desktop(folder)

    summary = _write_summary(out, results, args, session, interrupted=False)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table(console, summary)
        console.print(f"trajectories and summary.json in {out}")
    return 0


def _write_summary(out: Path, results: list, args: argparse.Namespace, session, interrupted: bool) -> dict:
    from tools.practice_run import summarise

    summary = summarise(results)
    summary["interrupted"] = interrupted
    summary.update(_provenance(args, out, session))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _provenance(args: argparse.Namespace, out: Path, session) -> dict:
    from eval.provenance import code_version, machine_info, now_iso

    return {
        "config": {
            "command": args.practice_command,
            "tasks": args.tasks,
            "episodes": args.episodes,
            "first_seed": args.seed,
            "policy": args.policy,
            "model": _resolve_model(args),
            # "config" keeps the model's own window; record has no model, so no window.
            "attention_window": getattr(args, "attention_window", None),
            "max_steps": args.max_steps,
            "episode_seconds": args.episode_seconds,
            "mapping": None if session is None or session.mapping is None else vars(session.mapping),
        },
        "out": str(out),
        "code_version": code_version(),
        "machine": {**machine_info(), "browser": None if session is None else session.browser},
        "date": now_iso(),
    }


def _print_table(console, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"success rate {summary['success_rate']:.1%} over {summary['episodes']} episodes")
    for column in ("task", "episodes", "success", "mean steps", "latency ms/step", "s/step"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, figures in summary["per_task"].items():
        table.add_row(
            task,
            str(figures["episodes"]),
            f"{figures['success_rate']:.0%}",
            f"{figures['mean_steps']:.1f}",
            f"{figures['mean_latency_ms']:.1f}",
            f"{figures['mean_step_seconds']:.2f}",
        )
    console.print(table)
