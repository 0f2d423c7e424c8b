"""`holdfast replay TRAJECTORY --execute`: re-run recorded actions and score the screen per step."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from agent.executor import DEFAULT_PAUSE_SECONDS
from agent.replay import DEFAULT_SETTLE_SECONDS, DEFAULT_TOLERANCE, ReplayStep
from agent.run_command import printable

console = Console()
error_console = Console(stderr=True, soft_wrap=True)


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("trajectory", type=Path, help="trajectory folder (task.json, steps.jsonl, PNGs)")
    parser.add_argument(
        "--execute", action="store_true",
        help="run the recorded actions on this desktop (without it, only list them)",
    )
    parser.add_argument("--dry-run", action="store_true", help="log each action, never touch mouse or keyboard")
    parser.add_argument("--confirm", action="store_true", help="ask before each action: y do it, n skip, q stop")
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help="highest passing score: mean absolute RGB difference in 0..1 (default: %(default)s)",
    )
    parser.add_argument(
        "--settle", type=float, default=DEFAULT_SETTLE_SECONDS,
        help="seconds to wait after each action before capturing (default: %(default)s)",
    )
    parser.add_argument("--monitor", type=int, default=None, help="monitor number as mss counts them, from 1 (default: primary)")
    parser.add_argument(
        "--pause", type=float, default=DEFAULT_PAUSE_SECONDS, help="seconds pyautogui waits after each input call"
    )
    return handle


def _confirm(action, text: str) -> str:
    return Prompt.ask(f"run [bold]{text}[/]?", choices=["y", "n", "q"], default="y", console=console)


def _row(table: Table, step: ReplayStep) -> None:
    if step.passed is None:
        verdict = Text("-")
    else:
        verdict = Text("pass", style="green") if step.passed else Text("FAIL", style="red")
    score = "-" if step.score is None else f"{step.score:.4f}"
    table.add_row(str(step.index), Text(printable(step.action_text)), step.outcome, score, verdict)


def _new_table(title: str) -> Table:
    table = Table(title=title)
    for name in ("step", "action", "outcome", "score", "result"):
        table.add_column(name, justify="right" if name in ("step", "score") else "left")
    return table


def handle(args: argparse.Namespace) -> int:
    from agent.trajectory import TrajectoryError, load_trajectory

    try:
        trajectory = load_trajectory(args.trajectory)
    except TrajectoryError as error:
        error_console.print(f"[red]holdfast replay: {escape(str(error))}[/]")
        return 2
    if not 0.0 <= args.tolerance <= 1.0:
        error_console.print(f"[red]holdfast replay: invalid --tolerance {args.tolerance}: must be in 0..1[/]")
        return 2

    task = trajectory.task
    console.print(f"{args.trajectory}: {task.instruction!r}, {len(trajectory.steps)} steps, status {task.status}")
    if not args.execute:
        table = _new_table("recorded steps (add --execute to replay them)")
        for step in trajectory.steps:
            table.add_row(str(step.index), Text(printable(step.action_text)), "recorded", "-", Text(step.error or "-"))
        console.print(table)
        return 0

    from agent.executor import DisplayError, Executor, check_display
    from agent.replay import replay_trajectory
    from agent.screen import ScreenCapture

    try:
        check_display()
    except DisplayError as error:
        error_console.print(f"[red]holdfast replay: {escape(str(error))}[/]")
        return 2

    table = _new_table("replay")
    with ScreenCapture(args.monitor) as screen:
        geometry = screen.geometry()
        if geometry.size != (task.screen_width, task.screen_height):
            console.print(
                f"[yellow]note: recorded on a {task.screen_width}x{task.screen_height} screen, replaying on "
                f"{geometry.width}x{geometry.height}; screenshots are resized before comparing[/]"
            )
        executor = Executor(geometry, pause=args.pause, dry_run=args.dry_run, confirm=_confirm if args.confirm else None)
        results = replay_trajectory(
            trajectory, executor, screen, tolerance=args.tolerance, settle_seconds=args.settle,
            on_step=lambda step: _row(table, step),
        )
    console.print(table)
    scored = [step for step in results if step.passed is not None]
    failed = [step for step in scored if not step.passed]
    console.print(f"{len(scored) - len(failed)} of {len(scored)} compared steps within tolerance {args.tolerance}")
    return 1 if failed else 0
