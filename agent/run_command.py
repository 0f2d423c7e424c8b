"""`holdfast run "INSTRUCTION"`: drive the desktop with a model until it returns done(...)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from agent.loop import DEFAULT_MAX_FAILURES, DEFAULT_MAX_STEPS, StepReport
from agent.executor import DEFAULT_PAUSE_SECONDS

logger = logging.getLogger(__name__)
console = Console()
error_console = Console(stderr=True, soft_wrap=True)

EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("instruction", help="what the agent should do, in plain words")
    parser.add_argument(
        "--model", default=None, metavar="PATH_OR_PRESET",
        help="model folder or preset name (default: the shipped practice model, else the random practice preset)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument("--dry-run", action="store_true", help="log each action, never touch mouse or keyboard")
    parser.add_argument("--confirm", action="store_true", help="ask before each action: y do it, n skip, q stop")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="stop after N steps")
    parser.add_argument(
        "--max-failures", type=int, default=DEFAULT_MAX_FAILURES,
        help="stop after N unparseable or rejected actions in a row",
    )
    parser.add_argument(
        "--record", type=Path, default=None, metavar="DIR",
        help="trajectory folder to write (default: runs/run-YYYYmmdd-HHMMSS)",
    )
    parser.add_argument("--monitor", type=int, default=None, help="monitor number as mss counts them, from 1 (default: primary)")
    parser.add_argument(
        "--pause", type=float, default=DEFAULT_PAUSE_SECONDS, help="seconds pyautogui waits after each input call"
    )
    parser.add_argument(
        "--action-format", default=None, choices=["holdfast", "pyautogui", "json"],
        help="action text format of the model (default: the folder's holdfast.json, else json for Nano-VL folders, "
        "holdfast otherwise)",
    )
    parser.add_argument(
        "--max-tiles", type=int, default=None, metavar="N",
        help="at most N 512-pixel tiles per screenshot for Nano-VL models; fewer tiles, fewer tokens per step (default 12)",
    )
    return handle


def _confirm(action, text: str) -> str:
    return Prompt.ask(f"run [bold]{text}[/]?", choices=["y", "n", "q"], default="y", console=console)


def _step_table(reports: list[StepReport], limit: int = 15) -> Table:
    table = Table(title="holdfast run", expand=False)
    table.add_column("step", justify="right")
    table.add_column("action")
    table.add_column("outcome")
    table.add_column("latency ms", justify="right")
    table.add_column("state bytes", justify="right")
    for report in reports[-limit:]:
        # Model output may hold control characters or rich markup; show it escaped, as plain text.
        action = printable(report.action_text)
        outcome = Text(report.outcome, style="red" if report.error else "")
        table.add_row(str(report.index), Text(action), outcome, f"{report.latency_ms:.0f}", f"{report.state_bytes:,}")
    return table


def printable(text: str, width: int = 60) -> str:
    """Return `text` with unprintable characters escaped, cut to `width` characters."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def handle(args: argparse.Namespace) -> int:
    from agent.executor import DisplayError, Executor, check_display
    from agent.loop import run_agent
    from agent.screen import ScreenCapture
    from agent.trajectory import STATUS_INTERRUPTED, TrajectoryRecorder, new_task_info

    if args.max_steps < 1 or args.max_failures < 1 or args.pause < 0:
        error_console.print(
            f"[red]holdfast run: invalid limits --max-steps {args.max_steps}, --max-failures {args.max_failures}, "
            f"--pause {args.pause}: the first two must be >= 1 and the pause >= 0[/]"
        )
        return 2
    try:
        check_display()
    except DisplayError as error:
        error_console.print(f"[red]holdfast run: {escape(str(error))}[/]")
        return 2

    from model.policy import default_model, load_policy

    model_name = args.model or default_model()
    # A preset name (not a folder) means random weights, whose clicks land anywhere.
    if not Path(model_name).exists() and not (args.dry_run or args.confirm):
        error_console.print(
            f"[red]holdfast run: model {model_name!r} has random weights and would click at random on this "
            "desktop; pass a trained model folder with --model, or add --dry-run or --confirm[/]"
        )
        return 2

    folder = args.record or Path("runs") / dt.datetime.now().strftime("run-%Y%m%d-%H%M%S")
    reports: list[StepReport] = []
    with ScreenCapture(args.monitor) as screen:
        geometry = screen.geometry()
        policy = load_policy(
            model_name, device=args.device, action_format=args.action_format, max_num_tiles=args.max_tiles
        )
        executor = Executor(
            geometry, pause=args.pause, dry_run=args.dry_run, confirm=_confirm if args.confirm else None
        )
        task = new_task_info(
            args.instruction, geometry.size, model_name,
            metadata={"monitor": args.monitor, "dry_run": args.dry_run, "geometry": vars(geometry)},
        )
        try:
            recorder = TrajectoryRecorder(folder, task)
        except FileExistsError as error:
            error_console.print(f"[red]holdfast run: {escape(str(error))}[/]")
            return 2

        if args.confirm:
            # A live view would redraw over the y/n/q prompt, so print one line per step instead.
            def show(report: StepReport) -> None:
                reports.append(report)
                console.print(_step_table([report], limit=1))

            result = run_agent(
                args.instruction, policy, screen, executor, recorder,
                max_steps=args.max_steps, max_failures=args.max_failures, on_step=show,
            )
        else:
            with Live(_step_table(reports), console=console, refresh_per_second=4) as live:
                def show(report: StepReport) -> None:
                    reports.append(report)
                    live.update(_step_table(reports))

                result = run_agent(
                    args.instruction, policy, screen, executor, recorder,
                    max_steps=args.max_steps, max_failures=args.max_failures, on_step=show,
                )

    answer = f", answer {result.answer!r}" if result.answer else ""
    console.print(f"run ended: [bold]{result.status}[/] after {result.steps} steps{answer}; trajectory in {folder}")
    return EXIT_INTERRUPTED if result.status == STATUS_INTERRUPTED else 0
