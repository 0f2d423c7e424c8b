"""The `holdfast` command line: one subcommand per job, each defined next to the code it runs.

Subcommand modules are imported only when their command runs, so `holdfast --help` stays fast
and does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# Each entry: (command name, one-line help, "module:function" that adds the arguments and
# returns the handler). Keeping the table here gives one place that lists every command.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "Drive the desktop with a model until it returns done", "agent.run_command:add_arguments"),
    ("replay", "Re-execute a recorded trajectory on the live desktop", "agent.replay_command:add_arguments"),
    ("eval", "Score a policy on recorded trajectories offline", "eval.cli:add_arguments"),
    ("bench", "Compare throughput and memory of hybrid and Transformer engines", "eval.bench_cli:add_arguments"),
    ("practice", "Practice desktop: MiniWoB++ tasks in Chromium on Xvfb", "tools.practice_cli:add_arguments"),
    ("train", "Behavioural cloning from recorded trajectories", "tools.train_cli:add_arguments"),
    ("train-bench", "Time training steps of presets and precisions side by side", "tools.train_bench_cli:add_arguments"),
    ("model", "Inspect presets and checkpoints, time one agent step", "model.cli:add_arguments"),
)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holdfast",
        description="Holdfast: a computer-use agent whose history lives in a recurrent state.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others get a stub parser for --help.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, help_text, target in COMMANDS:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        module_name, function_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            sub.set_defaults(handler=_not_available(name))
            continue
        sub.set_defaults(handler=getattr(module, function_name)(sub))
    return parser


def _not_available(name: str):
    def handler(args: argparse.Namespace) -> int:
        print(f"holdfast {name}: this command is not part of this build yet", file=sys.stderr)
        return 2

    return handler


def _exit_on_sigterm(signal_number: int, frame) -> None:
    # `timeout`, `kill` and batch schedulers stop a command with SIGTERM, whose default action
    # ends Python at once. Raising instead unwinds the stack as Ctrl-C does, so `finally` blocks
    # stop the practice desktop a command started and recorders close their trajectories.
    # Later SIGTERMs are ignored, so that they cannot cut that cleanup short; SIGKILL still works.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signal_number)


def main(argv: list[str] | None = None) -> int:
    # Signal handlers can only be set from the main thread. Elsewhere SIGTERM keeps its default.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_main_thread else None
    try:
        return _run_command(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_command(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0

    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr so that commands with --json keep stdout for the JSON object alone.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
    )
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        # Bad input (an unknown preset, a missing or corrupt file, an invalid checkpoint) gets
        # one line that names it; --verbose shows the traceback too.
        if args.verbose:
            raise
        print(f"holdfast {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: the command's own cleanup has run, and a traceback would only hide its messages.
        print(f"holdfast {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader is gone, so stop quietly.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
