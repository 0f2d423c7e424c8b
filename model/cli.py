"""`holdfast model info`: what a preset or checkpoint is made of, without running it.
`holdfast model probe`: how much a trained model's actions depend on the screenshots."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser):
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="print layer pattern, parameter counts and per-session state sizes")
    info.add_argument("models", nargs="+", metavar="PRESET_OR_PATH", help="preset names or model folders")
    info.add_argument("--steps", type=int, default=64, help="history length in agent steps for the state size (default 64)")
    info.add_argument("--action-tokens", type=int, default=16, help="tokens per action for the state size (default 16)")
    probe = sub.add_parser(
        "probe", help="compare a trained model's action loss with its own screenshots and with another episode's"
    )
    probe.add_argument("model", metavar="PATH", help="model folder")
    probe.add_argument("data", nargs="+", metavar="DATA_DIR", help="trajectory folders, or folders that contain them")
    probe.add_argument("--episodes", type=int, default=200, help="episodes to score, sampled with a fixed seed (default 200)")
    probe.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return run


def run(args: argparse.Namespace) -> int:
    return run_info(args) if args.model_command == "info" else run_probe(args)


def run_probe(args: argparse.Namespace) -> int:
    import json
    import random

    import torch
    from rich.console import Console

    from model.checkpoint import load_model
    from tools.train import TrainConfig, find_trajectories, load_episodes, screenshot_reliance

    if args.episodes < 2:
        raise ValueError(f"invalid --episodes {args.episodes}: use 2 or more, so that screenshots can be swapped")
    model = load_model(args.model, dtype=torch.float32)
    folders = find_trajectories(args.data)
    if len(folders) > args.episodes:
        folders = sorted(random.Random(0).sample(folders, args.episodes))
    # Score the actions in the form the trainer uses, so the loss is comparable to training's.
    episodes, problems = load_episodes(folders, model, TrainConfig().coordinate_decimals)
    console = Console(stderr=True)
    for problem in problems:
        console.print(f"skipped: {problem}")
    result = {"model": args.model, **screenshot_reliance(model, episodes)}
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(
            f"{result['episodes']} episodes: action loss {result['own_screenshots_loss']:.4f} with their own "
            f"screenshots, {result['swapped_screenshots_loss']:.4f} with another episode's "
            f"(+{result['increase']:.4f}). Near zero means the model does not read the screen."
        )
    return 0


def _config_of(name: str):
    from model.checkpoint import CheckpointError, config_from_nemotron_h, read_config
    from model.config import get_preset, preset_names

    path = Path(name)
    if path.is_dir():
        from model.nano_vl import is_nano_vl_folder, read_folder_config

        if is_nano_vl_folder(path):
            # NOTE: the language model only; the RADIO vision tower is not counted here.
            return config_from_nemotron_h(read_folder_config(path)["llm_config"])
        return read_config(path)[0]
    if name not in preset_names():
        raise CheckpointError(f"{name!r} is neither a model folder nor a preset; presets: {', '.join(preset_names())}")
    return get_preset(name)


def run_info(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from model.hybrid import HoldfastModel

    table = Table(title=f"Models (state after {args.steps} steps)")
    for column in ("model", "pattern", "language params", "vision params", "image tokens", "window", "state after"):
        table.add_column(column)
    for name in args.models:
        config = _config_of(name)
        with torch.device("meta"):
            model = HoldfastModel(config)
        image_tokens = config.vision.image_tokens if config.vision else 0
        # One step: <step> <image> image tokens </image> <action> action </action>.
        tokens = args.steps * (image_tokens + args.action_tokens + 4)
        state = sum(config.state_bytes(tokens).values())
        table.add_row(
            name,
            config.pattern,
            f"{model.num_parameters('language') / 1e6:,.1f}M",
            f"{model.num_parameters('vision') / 1e6:,.1f}M",
            str(image_tokens),
            str(config.attention_window),
            f"{state / 2**20:,.1f} MiB",
        )
    # Wide enough that preset names are never cut, also when the output is piped.
    Console(width=max(120, Console().width)).print(table)
    return 0
