"""Behavioural cloning from recorded trajectories.

Each episode is one sequence, laid out exactly as the streaming session feeds it:

    <instruction> instruction bytes
    per step: <step> <image> [image embeddings] </image> <action> action bytes </action>

The loss is cross-entropy on the action bytes and </action> only. The forward pass runs without
a session, which uses the same chunked scan and the same attention window band that inference
uses, so the model trains on the function it runs.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from agent.actions import COORDINATE_DECIMALS, Action, Type, format_action
from agent.trajectory import TASK_FILE, UNSUCCESSFUL_STATUSES, TrajectoryError, load_trajectory
from model.checkpoint import WEIGHTS_FILE, build_model, load_model, load_weights, read_config, save_model
from model.config import ModelConfig
from model.hybrid import HoldfastModel
from model.pointer import class_to_pair_text, content_fraction, coordinate_pairs, point_to_class
from model.tokenizer import ByteTokenizer
from model.vision import image_to_tensor

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
QUOTED_TEXT = re.compile(r'"([^"]+)"')
COORDINATE_FIELDS = ("x", "y", "to_x", "to_y")
TRAINER_STATE_FILE = "trainer_state.safetensors"
TRAINER_INFO_FILE = "trainer_state.json"
LOSS_AVERAGES = ("episodes", "tokens")


@dataclass
class TrainConfig:
    preset: str = "practice"
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    episodes_per_step: int = 4  # episodes in one padded batch, which is one optimiser step
    seed: int = 0
    save_every: int = 250
    device: str = "cpu"
    bf16: bool = False
    # Pixel augmentation: a random shift of up to this many model pixels and a brightness and
    # contrast jitter of up to this fraction. The shift is small next to a MiniWoB++ element
    # (a 20-pixel button at the practice resolution), so the clicked point stays on target.
    shift_pixels: int = 2
    color_jitter: float = 0.1
    # Demonstrated coordinates are rounded to this many decimals of the screen before training
    # (None keeps the recorded 3). The expert's third decimal is sub-pixel jitter at the
    # practice resolution (0.001 of 128 pixels), so learning it spends capacity on noise.
    # 0.01 is 1.3 to 1.6 input pixels, far below a target's size.
    coordinate_decimals: int | None = 2
    # Text augmentation: the chance that the quoted instruction strings an episode types are
    # swapped, in both places, for random strings of the same shape. The practice model cannot
    # read 10-pixel text, so it must copy from the instruction tokens. Fresh strings keep it
    # from memorising the names in the training episodes.
    text_substitution: float = 0.5
    # A model folder whose weights start the run instead of a random initialisation (a fresh
    # optimiser and schedule). Tensors it lacks, such as a head added since, start at random.
    init: str | None = None
    # Attention window to train with instead of the preset's (a resumed run keeps the one saved
    # in its folder unless this is set). The saved config.json records it, so the model runs
    # with the window it learned with. With a window shorter than one step's tokens, the
    # Mamba-2 state is the only path to earlier steps.
    attention_window: int | None = None
    # Failed trajectories (practice record --keep-failures, practice run) are left out unless
    # this is set, because cloning them teaches the mistakes.
    include_unsuccessful: bool = False
    # "episodes" weighs every episode the same and "tokens" every action target. A click is 9
    # targets, so under "episodes" the one click of a 5-step memory episode that needs the first
    # screen weighs a fifth of a one-step task's click (docs/training.md).
    loss_average: str = "episodes"
    # A step's episodes run as padded passes of similar length, split wherever that saves more
    # padded tokens than this per extra pass (None: one pass). The split leaves the loss as is.
    pass_overhead_tokens: int | None = 256


@dataclass
class Episode:
    """One demonstration, preprocessed for the model."""

    source: str
    instruction_ids: list[int]
    pixels: Tensor  # (S, 3, H, W) float16, normalised
    action_ids: list[list[int]] = field(default_factory=list)  # per step, bytes + </action>
    instruction: str = ""
    actions: list[Action] = field(default_factory=list)
    # Per step, the fraction (width, height) of the model input that the screenshot covers.
    content: list[tuple[float, float]] = field(default_factory=list)


def tokenize_episode(source: str, instruction: str, pixels: Tensor, actions: list[Action],
                     content: list[tuple[float, float]] | None = None) -> Episode:
    """Build an episode, tokenising the instruction and each action's canonical text once.

    `content` defaults to screenshots that fill the model input.
    """
    tokenizer = ByteTokenizer()
    return Episode(
        source,
        [tokenizer.instruction_id, *tokenizer.encode(instruction)],
        pixels,
        [tokenizer.encode(format_action(action)) + [tokenizer.action_end_id] for action in actions],
        instruction,
        list(actions),
        list(content) if content is not None else [(1.0, 1.0)] * len(actions),
    )


def find_trajectories(paths: list[str | Path]) -> list[Path]:
    """Trajectory folders given directly or found below the given folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; give trajectory folders or folders that contain them")
        if (path / TASK_FILE).is_file():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.rglob(TASK_FILE))
    if not found:
        raise FileNotFoundError(f"no trajectories ({TASK_FILE}) under {', '.join(map(str, paths))}")
    return found


def round_coordinates(action: Action, decimals: int | None) -> Action:
    """Return the action with its screen coordinates rounded to `decimals` (None: unchanged)."""
    if decimals is None:
        return action
    fields = {name: round(getattr(action, name), decimals) for name in COORDINATE_FIELDS if hasattr(action, name)}
    return action.model_copy(update=fields) if fields else action


def load_episodes(
    paths: list[str | Path], model: HoldfastModel, coordinate_decimals: int | None = None,
    include_unsuccessful: bool = False,
) -> tuple[list[Episode], list[str]]:
    """Load and preprocess every trajectory; unreadable and (unless `include_unsuccessful`) failed ones are reported and skipped."""
    episodes, problems = [], []
    for folder in find_trajectories(paths):
        try:
            trajectory = load_trajectory(folder)
        except TrajectoryError as error:
            problems.append(str(error))
            continue
        status = trajectory.task.status
        if status in UNSUCCESSFUL_STATUSES and not include_unsuccessful:
            problems.append(
                f"{folder}: task.json status {status!r}, not a successful demonstration; skipped"
                " (holdfast train --include-unsuccessful trains on it)"
            )
            continue
        steps = [step for step in trajectory.steps if step.action is not None]
        if not steps:
            problems.append(f"{folder}: no step with a parsed action; skipped")
            continue
        screenshots = [trajectory.load_screenshot(step) for step in steps]
        vision = model.config.vision
        pixels = torch.stack([image_to_tensor(image, vision) for image in screenshots]).half()
        content = [content_fraction(image.width, image.height, vision) for image in screenshots]
        actions = [round_coordinates(step.action, coordinate_decimals) for step in steps]
        episodes.append(tokenize_episode(str(folder), trajectory.task.instruction, pixels, actions, content))
    return episodes, problems


def _random_like(text: str, generator: torch.Generator) -> str:
    """Return a random string of the same shape: letters keep their case, digits stay digits."""
    out = []
    for char in text:
        if char.isascii() and char.isdigit():
            pool = string.digits
        elif char.isascii() and char.islower():
            pool = string.ascii_lowercase
        elif char.isascii() and char.isupper():
            pool = string.ascii_uppercase
        else:
            out.append(char)
            continue
        out.append(pool[int(torch.randint(len(pool), (1,), generator=generator))])
    return "".join(out)


def substitute_quoted_text(episode: Episode, generator: torch.Generator) -> Episode:
    """Swap each quoted instruction string that a type action copies for a random one.

    The typed text may contain the string as quoted, in lower case or in upper case, because
    some tasks ask for a case change. Each form is replaced by the same form of the new string.
    Strings the actions do not type stay as they are, and so do the screenshots.
    """
    typed = [action.text for action in episode.actions if isinstance(action, Type)]
    instruction, actions = episode.instruction, list(episode.actions)
    for quoted in dict.fromkeys(QUOTED_TEXT.findall(instruction)):
        forms = dict.fromkeys([quoted, quoted.lower(), quoted.upper()])
        if not any(form in text for form in forms for text in typed):
            continue
        new = _random_like(quoted, generator)
        swaps = {quoted.upper(): new.upper(), quoted.lower(): new.lower(), quoted: new}
        instruction = instruction.replace(f'"{quoted}"', f'"{new}"')
        for index, action in enumerate(actions):
            if isinstance(action, Type):
                text = action.text
                for old, replacement in swaps.items():
                    text = text.replace(old, replacement)
                actions[index] = action.model_copy(update={"text": text})
    if instruction == episode.instruction:
        return episode
    return tokenize_episode(episode.source, instruction, episode.pixels, actions, episode.content)


def augment(pixels: Tensor, config: TrainConfig, generator: torch.Generator) -> tuple[Tensor, tuple[int, int]]:
    """Shift each screenshot by a few pixels (zero fill) and jitter brightness and contrast.

    Returns the pixels and the shift (dx, dy) in model pixels, by which the pointer targets move.
    """
    out = pixels.float()
    dy = dx = 0
    if config.shift_pixels:
        limit = config.shift_pixels
        dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator))
        out = torch.roll(out, shifts=(dy, dx), dims=(-2, -1))
        if dy > 0:
            out[..., :dy, :] = 0
        elif dy < 0:
            out[..., dy:, :] = 0
        if dx > 0:
            out[..., :dx] = 0
        elif dx < 0:
            out[..., dx:] = 0
    if config.color_jitter:
        scale = 1 + (torch.rand(1, generator=generator).item() * 2 - 1) * config.color_jitter
        offset = (torch.rand(1, generator=generator).item() * 2 - 1) * config.color_jitter
        out = out * scale + offset
    return out, (dx, dy)


def episode_losses(model: HoldfastModel, episodes: list[Episode], pixels: list[Tensor],
                   shifts: list[tuple[int, int]] | None = None) -> tuple[Tensor, Tensor]:
    """Return each episode's mean loss over its action targets (B,) and its number of targets (B,).

    The targets are the action tokens. For a model with a pointer head, each coordinate pair is
    one more target, a pointer choice over the step's image tokens, and the pair's digits are
    not token targets, because at inference the pointer writes them. `shifts` gives each
    episode's augmentation shift (dx, dy) in model pixels, by which its pointer targets move.

    The episodes run as one right-padded batch. Both mixers are causal, so the padding after an
    episode's end cannot change its positions. At the practice size, interpreter and kernel-launch
    overhead dominate, and one batched pass pays it once instead of once per episode.
    """
    tok = ByteTokenizer()
    device = model.device
    vision = model.config.vision
    subdivision = model.config.pointer_subdivision
    shifts = shifts or [(0, 0)] * len(episodes)
    # One vision pass for every screenshot of the batch.
    images = model.encode_images(torch.cat(pixels).to(device)).split([len(p) for p in pixels])

    def embed(ids: list[int]) -> Tensor:
        return model.embed_tokens(torch.tensor(ids, device=device))

    sequences, label_rows = [], []
    # Pointer targets: (row, query position, first image-token position, class).
    pointer_targets: list[tuple[int, int, int, int]] = []
    for row, (episode, episode_images, (dx, dy)) in enumerate(zip(episodes, images, shifts)):
        pieces, labels = [embed(episode.instruction_ids)], [IGNORE_INDEX] * len(episode.instruction_ids)
        for index, action in enumerate(episode.action_ids):
            image_start = len(labels) + 2
            action_start = image_start + episode_images.shape[1] + 2
            labels += [IGNORE_INDEX] * (2 + episode_images.shape[1] + 2) + action
            if subdivision is not None:
                action = list(action)
                content = episode.content[index]
                for start, end, x, y in coordinate_pairs(episode.actions[index]):
                    x += dx / (vision.image_width * content[0])
                    y += dy / (vision.image_height * content[1])
                    target = point_to_class(x, y, content, vision, subdivision)
                    # The token before the pair (its "(" or ",") is where the pointer chooses.
                    pointer_targets.append((row, action_start + start - 1, image_start, target))
                    labels[action_start + start:action_start + end] = [IGNORE_INDEX] * (end - start)
                    # Feed the pair as the pointer writes it at inference (the centre of the
                    # target's sub-cell). Both texts have the same fixed width.
                    action[start:end] = tok.encode(class_to_pair_text(target, content, vision, subdivision))
            pieces += [
                embed([tok.step_id, tok.image_start_id]), episode_images[index],
                embed([tok.image_end_id, tok.action_start_id]), embed(action),
            ]
        sequences.append(torch.cat(pieces))
        # Position t predicts token t + 1: shift the labels left by one.
        label_rows.append(labels[1:] + [IGNORE_INDEX])
    length = max(len(row) for row in label_rows)
    inputs = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)  # (B, L, D), zero padded
    targets = torch.tensor([row + [IGNORE_INDEX] * (length - len(row)) for row in label_rows], device=device)
    hidden = model.hidden_states(inputs_embeds=inputs)
    logits = model.lm_head(hidden)
    if model.config.copy_instruction:
        token_losses = _copy_losses(model, episodes, hidden, logits, targets)
    else:
        token_losses = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view(targets.shape)
    sums = token_losses.sum(dim=1)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    if pointer_targets:
        rows, queries, starts, classes = (torch.tensor(column, device=device) for column in zip(*pointer_targets))
        spans = starts[:, None] + torch.arange(images[0].shape[1], device=device)  # (N, T)
        pointer_logits = model.point(hidden[rows, queries], model.pointer_keys(hidden[rows[:, None], spans]))
        pointer_losses = F.cross_entropy(pointer_logits, classes, reduction="none")
        sums = sums.index_add(0, rows, pointer_losses)
        counts = counts.index_add(0, rows, torch.ones_like(rows))
    return sums / counts.clamp(min=1), counts


def _copy_losses(model: HoldfastModel, episodes: list[Episode], hidden: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
    """Negative log-likelihood (B, L) of each target under the copy head's mixed distribution
    (model.copy); zero where there is no target.

    Each episode's sequence starts with its instruction, so the copy table of row b is the
    instruction's tokens after <instruction>, keyed by the states at positions 0 .. n - 1.
    """
    device = hidden.device
    lengths = [len(episode.instruction_ids) - 1 for episode in episodes]
    width = max(lengths)
    values = torch.tensor(
        [episode.instruction_ids[1:] + [0] * (width - n) for episode, n in zip(episodes, lengths)], device=device
    )
    valid = torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    keys = model.copy_keys(hidden[:, :width])  # (B, n, K)
    rows, positions = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    expected = targets[rows, positions]
    vocabulary = logits[rows, positions].float().log_softmax(-1).gather(1, expected[:, None]).squeeze(1).exp()
    attention, gate = model.copy_head(hidden[rows, positions], keys[rows], valid[rows])
    copied = (attention * (model.copy_head.sources(values[rows]) == expected[:, None])).sum(-1)
    likelihood = gate * vocabulary + (1 - gate) * copied
    losses = torch.zeros(targets.shape, device=device)
    return losses.index_put((rows, positions), -torch.log(likelihood.clamp(min=1e-12)))


def screenshot_reliance(model: HoldfastModel, episodes: list[Episode], batch_size: int = 16) -> dict:
    """Measure how much the action loss depends on the screenshots' content.

    Each episode is scored twice: with its own screenshots, and with those of another episode
    of the same length (rotated by one within each length). A model that reads the screen
    scores worse with the wrong screenshots. Equal losses mean it acts on the instruction and
    the action history alone. Episodes whose length no other episode shares are left out.
    """
    by_length: dict[int, list[Episode]] = {}
    for episode in episodes:
        by_length.setdefault(len(episode.action_ids), []).append(episode)
    pairs = []
    for group in by_length.values():
        if len(group) > 1:
            pairs += [(episode, group[(index + 1) % len(group)]) for index, episode in enumerate(group)]
    if not pairs:
        raise ValueError("no two episodes have the same number of steps, so no screenshots can be swapped; give more episodes")
    was_training = model.training
    model.eval()
    own_total = swapped_total = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            scored = [episode for episode, _ in chunk]
            own, _ = episode_losses(model, scored, [episode.pixels.float() for episode, _ in chunk])
            swapped, _ = episode_losses(model, scored, [other.pixels.float() for _, other in chunk])
            own_total += float(own.sum())
            swapped_total += float(swapped.sum())
    model.train(was_training)
    own_loss, swapped_loss = own_total / len(pairs), swapped_total / len(pairs)
    return {
        "episodes": len(pairs),
        "own_screenshots_loss": round(own_loss, 5),
        "swapped_screenshots_loss": round(swapped_loss, 5),
        "increase": round(swapped_loss - own_loss, 5),
    }


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save_trainer_state(out: Path, optimizer: torch.optim.Optimizer, step: int, order_rng: random.Random,
                        generator: torch.Generator, config: TrainConfig, history: list[dict]) -> None:
    tensors: dict[str, Tensor] = {"torch_rng": generator.get_state()}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().clone().contiguous().cpu()
    save_file(tensors, str(out / (TRAINER_STATE_FILE + ".tmp")))
    (out / (TRAINER_STATE_FILE + ".tmp")).replace(out / TRAINER_STATE_FILE)
    info = {"step": step, "order_rng": order_rng.getstate(), "config": config.__dict__, "history": history}
    (out / (TRAINER_INFO_FILE + ".tmp")).write_text(json.dumps(info))
    (out / (TRAINER_INFO_FILE + ".tmp")).replace(out / TRAINER_INFO_FILE)


def check_resumed_objective(out: Path, config: TrainConfig) -> None:
    """Raise ValueError when resuming the run in `out` would change the loss average it was trained with."""
    saved = json.loads((out / TRAINER_INFO_FILE).read_text()).get("config", {})
    # Trainer states written before the option existed trained with the per-episode average.
    used = saved.get("loss_average", "episodes")
    if used != config.loss_average:
        raise ValueError(
            f"{out} was trained with loss_average {used!r}, and resuming would switch it to {config.loss_average!r};"
            f" pass --loss-average {used} to continue it, or train into a new --out"
        )


def _load_trainer_state(out: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> tuple[int, random.Random, list[dict]]:
    info = json.loads((out / TRAINER_INFO_FILE).read_text())
    tensors = load_file(str(out / TRAINER_STATE_FILE))
    generator.set_state(tensors.pop("torch_rng"))
    state_dict = optimizer.state_dict()
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state_dict["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(state_dict)
    order_rng = random.Random()
    version, internal, gauss = info["order_rng"]
    order_rng.setstate((version, tuple(internal), gauss))
    return info["step"], order_rng, info["history"]


# Configuration fields that may differ between an --init folder and the preset: the name, the
# attention window (no weights depend on it) and the heads, whose missing tensors start at random.
_INIT_TOLERATED_FIELDS = ("name", "attention_window", "pointer_subdivision", "copy_instruction", "copy_case")


def resumes(out: Path, resume: bool) -> bool:
    """Return whether a run resumes: `resume` is set and `out` has a saved trainer state."""
    return resume and (out / TRAINER_INFO_FILE).is_file()


def check_init(folder: Path, preset: ModelConfig) -> None:
    """Raise if the --init model folder is missing, unreadable or of another preset."""
    stored, _ = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: not found; --init needs a model folder with {WEIGHTS_FILE}")
    differing = [
        f"{name} ({getattr(stored, name)!r} there, {getattr(preset, name)!r} in the preset)"
        for name in type(preset).model_fields
        if name not in _INIT_TOLERATED_FIELDS and getattr(stored, name) != getattr(preset, name)
    ]
    if differing:
        raise ValueError(
            f"{folder}: invalid --init model: a {stored.name!r} model that differs from preset {preset.name!r} in "
            f"{', '.join(differing)}; pass the --preset it was trained with"
        )


def _load_init(model: HoldfastModel, folder: Path) -> list[str]:
    """Copy an --init model folder's weights into `model` and return the tensors it lacks."""
    check_init(folder, model.config)
    fresh = load_weights(model, folder / WEIGHTS_FILE, allow_missing=True)
    logger.info("starting from the weights in %s", folder)
    if fresh:
        logger.info("%d tensors the folder lacks start at random: %s", len(fresh), ", ".join(fresh))
    return fresh


def check_settings(config: TrainConfig) -> None:
    """Raise ValueError for a setting that no training step can use, naming the setting and its value."""
    decimals = config.coordinate_decimals
    if decimals is not None and not 0 <= decimals <= COORDINATE_DECIMALS:
        raise ValueError(f"invalid coordinate_decimals {decimals}: use 0 to {COORDINATE_DECIMALS}, or None to keep them")
    if config.episodes_per_step < 1:
        raise ValueError(f"invalid episodes_per_step {config.episodes_per_step}: use 1 or more")
    if config.attention_window is not None and config.attention_window < 1:
        raise ValueError(f"invalid attention_window {config.attention_window}: use a positive number of tokens")
    if config.loss_average not in LOSS_AVERAGES:
        raise ValueError(f"invalid loss_average {config.loss_average!r}: use one of {', '.join(LOSS_AVERAGES)}")
    if config.pass_overhead_tokens is not None and config.pass_overhead_tokens < 0:
        raise ValueError(
            f"invalid pass_overhead_tokens {config.pass_overhead_tokens}: use 0 or more (a very large value runs one pass)"
        )


def new_optimizer(model: HoldfastModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Build AdamW with weight decay on matrices only, because decaying norm gains and biases only shrinks them."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )


def sequence_length(episode: Episode, image_tokens: int) -> int:
    """Return the number of tokens in the episode's training sequence (the module docstring's layout)."""
    # Per step: <step> <image>, the image tokens, </image> <action>, then the action's bytes.
    return len(episode.instruction_ids) + sum(4 + image_tokens + len(ids) for ids in episode.action_ids)


def length_groups(lengths: list[int], pass_overhead: int | None) -> list[list[int]]:
    """Split indices into groups that minimise padded tokens plus `pass_overhead` per group.

    A group is a right-padded pass, which costs its size times its longest length. Only groups
    of neighbours in length order can be optimal, so a dynamic programme over the sorted
    lengths finds the best split exactly (O(n^2) for n episodes). With `pass_overhead` None,
    all indices form one group in their given order.
    """
    if pass_overhead is None:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = [0.0] + [math.inf] * len(order)  # best[j]: cheapest split of the j shortest
    cut = [0] * (len(order) + 1)  # cut[j]: where the last group of that split starts
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * lengths[order[end - 1]] + pass_overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def training_step(model: HoldfastModel, optimizer: torch.optim.Optimizer, batch: list[Episode], config: TrainConfig,
                  generator: torch.Generator) -> tuple[float, int]:
    """One optimiser step on `batch` with text and pixel augmentation; returns the loss and the action tokens.

    `holdfast train-bench` times this same function, so its figures are the training loop's.
    """
    optimizer.zero_grad(set_to_none=True)
    batch = [
        substitute_quoted_text(episode, generator)
        if float(torch.rand(1, generator=generator)) < config.text_substitution else episode
        for episode in batch
    ]
    with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        pixels, shifts = zip(*(augment(episode.pixels, config, generator) for episode in batch))
        image_tokens = model.config.vision.image_tokens if model.config.vision is not None else 0
        lengths = [sequence_length(episode, image_tokens) for episode in batch]
        results = [
            episode_losses(model, [batch[i] for i in group], [pixels[i] for i in group], [shifts[i] for i in group])
            for group in length_groups(lengths, config.pass_overhead_tokens)
        ]
        # Both averages below are sums over episodes, so the passes' order does not matter.
        losses, counts = (torch.cat(parts) for parts in zip(*results))
        if config.loss_average == "tokens":
            loss = (losses * counts).sum() / counts.sum().clamp(min=1)
        else:
            loss = losses.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item(), int(counts.sum())


def train(data: list[str | Path], out: str | Path, config: TrainConfig, resume: bool = False, progress=None) -> dict:
    """Train and return a summary; checkpoints go to `out` (model folder plus trainer state)."""
    check_settings(config)
    out = Path(out)
    torch.manual_seed(config.seed)
    resuming = resumes(out, resume)
    if resuming:
        check_resumed_objective(out, config)
    model = load_model(out, device=config.device) if resuming else build_model(config.preset, device=config.device, seed=config.seed)
    fresh: list[str] = []
    if config.init is not None and not resuming:
        fresh = _load_init(model, Path(config.init))
    if config.attention_window is not None:
        model.set_attention_window(config.attention_window)
    model.train()
    episodes, problems = load_episodes(data, model, config.coordinate_decimals, config.include_unsuccessful)
    for problem in problems:
        logger.warning("skipped: %s", problem)
    if not episodes:
        raise ValueError(f"no usable episodes in {', '.join(map(str, data))}")
    # Created only now, so that bad settings, an unusable --init or empty data leave nothing behind.
    out.mkdir(parents=True, exist_ok=True)

    optimizer = new_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    order_rng = random.Random(config.seed)
    history: list[dict] = []
    step = 0
    if resuming:
        step, order_rng, history = _load_trainer_state(out, optimizer, generator)
        logger.info("resuming from step %d in %s", step, out)

    started = time.perf_counter()
    tokens_done = 0
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        batch = [episodes[order_rng.randrange(len(episodes))] for _ in range(config.episodes_per_step)]
        total_loss, total_tokens = training_step(model, optimizer, batch, config, generator)
        step += 1
        tokens_done += total_tokens
        history.append({"step": step, "loss": round(total_loss, 5)})
        if progress is not None:
            progress(step, total_loss, tokens_done / max(1e-9, time.perf_counter() - started))
        if step % config.save_every == 0 or step == config.steps:
            save_model(model, out)
            _save_trainer_state(out, optimizer, step, order_rng, generator, config, history)

    elapsed = time.perf_counter() - started
    return {
        "steps": step,
        "episodes": len(episodes),
        "skipped": problems,
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "seconds": round(elapsed, 1),
        "out": str(out),
        "init": config.init,
        "attention_window": model.config.attention_window,
        "loss_average": config.loss_average,
        "fresh_tensors": fresh,
    }
