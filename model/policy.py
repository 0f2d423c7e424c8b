"""The model as an agent policy: an episode streamed through one session (agent.policy.Policy)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from PIL import Image

from model.checkpoint import build_model
from model.hybrid import HoldfastModel
from model.pointer import class_to_pair_text, content_fraction, expects_pair
from model.session import Session
from model.tokenizer import ByteTokenizer
from model.vision import image_to_tensor

logger = logging.getLogger(__name__)

# Maximum action length in tokens (bytes). A typed sentence fits well inside. A model that
# rambles is cut off there, and its text then fails to parse.
MAX_ACTION_TOKENS = 160

# The trained practice agent shipped with the package; absent until one has been trained.
SHIPPED_MODEL = Path(__file__).resolve().parent / "weights" / "practice"
# Every hybrid preset has a Transformer twin of matched size under this suffix.
TRANSFORMER_SUFFIX = "-transformer"


def default_model() -> str:
    """Return the model `holdfast run` uses without --model: the shipped checkpoint when present."""
    if (SHIPPED_MODEL / "config.json").is_file():
        return str(SHIPPED_MODEL)
    return "practice"


def transformer_model(model: str | None) -> str:
    """Resolve `--model` for `--policy transformer`: a folder as is, a hybrid preset to its twin.

    The default is `practice-transformer` with random weights, because no trained twin ships.
    """
    from model.config import preset_names

    model = model or "practice"
    if Path(model).exists():
        return model
    presets = preset_names()
    if model not in presets:
        raise ValueError(
            f"--model {model!r} is neither a folder nor a preset; give a Transformer checkpoint folder "
            f"or one of the presets {', '.join(presets)}"
        )
    return model if model.endswith(TRANSFORMER_SUFFIX) else model + TRANSFORMER_SUFFIX


class ModelPolicy:
    """Feeds each instruction, screenshot and action once; the history stays in the session."""

    def __init__(self, model: HoldfastModel, name: str | None = None, max_action_tokens: int = MAX_ACTION_TOKENS) -> None:
        if model.config.vision is None:
            raise ValueError(f"model {model.config.name!r} has no vision encoder, so it cannot read screenshots")
        self.model = model
        self.name = name or model.config.name
        self.tokenizer = ByteTokenizer()
        self.max_action_tokens = max_action_tokens
        self.session: Session | None = None
        self.content = (1.0, 1.0)  # fraction of the model input the last screenshot covers
        self.last_latency_ms = 0.0

    def _require_session(self) -> Session:
        if self.session is None:
            raise RuntimeError("call start(instruction) before feeding the episode")
        return self.session

    def start(self, instruction: str) -> None:
        self.session = Session(self.model, tokenizer=self.tokenizer)
        ids = [self.tokenizer.instruction_id, *self.tokenizer.encode(instruction)]
        if self.model.config.copy_instruction and len(ids) > 1:
            self.session.feed_copy_source(ids)
        else:
            self.session.feed_tokens(ids)

    def observe(self, screenshot: Image.Image) -> None:
        session = self._require_session()
        vision = self.model.config.vision
        pixels = image_to_tensor(screenshot, vision)
        self.content = content_fraction(screenshot.width, screenshot.height, vision)
        tok = self.tokenizer
        session.feed_image(pixels, prefix=[tok.step_id], suffix=[tok.action_start_id])

    def predict(self, *, commit: bool = True) -> str:
        session = self._require_session()
        started = time.perf_counter()
        mark = None if commit else session.checkpoint()
        config = self.model.config
        if config.pointer_subdivision is None and not config.copy_instruction:
            ids = session.generate(self.max_action_tokens, stop_id=self.tokenizer.action_end_id)[0]
        else:
            ids = self._generate_with_heads(session)
        if commit and (not ids or ids[-1] != self.tokenizer.action_end_id):
            # Cut off before </action>: close the action so the next step starts cleanly.
            session.feed_tokens([self.tokenizer.action_end_id])
        if mark is not None:
            session.rollback(mark)
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        return self.tokenizer.decode(ids)

    def _generate_with_heads(self, session: Session) -> list[int]:
        """Greedy decoding in which the pointer head writes each coordinate pair and each other
        token may be copied from the instruction (model.pointer, model.copy).

        Every token, generated or written, is fed, so the history is what training showed.
        """
        ids: list[int] = []
        stop = self.tokenizer.action_end_id
        subdivision = self.model.config.pointer_subdivision
        while len(ids) < self.max_action_tokens:
            if subdivision is not None and expects_pair(self.tokenizer.decode(ids)):
                index = int(session.point()[0].argmax())
                text = class_to_pair_text(index, self.content, self.model.config.vision, subdivision)
                pair = self.tokenizer.encode(text)[: self.max_action_tokens - len(ids)]
                session.feed_tokens(pair)
                ids += pair
                continue
            token = int(session.next_token_probabilities()[0].argmax())
            ids.append(token)
            session.feed_tokens([token])
            if token == stop:
                break
        return ids

    def feed_action(self, action_text: str) -> None:
        session = self._require_session()
        session.feed_tokens([*self.tokenizer.encode(action_text), self.tokenizer.action_end_id])

    def state_bytes(self) -> int:
        return 0 if self.session is None else self.session.state_bytes()


def load_policy(
    path_or_preset: str | None = None, device: str = "cpu", seed: int = 0,
    action_format: str | None = None, max_num_tiles: int | None = None,
    attention_window: int | None | str = "config",
):
    """Load a policy from a model folder or a preset name (random weights); None means the default model.

    A Nemotron-Nano-VL-v2 folder (Holotron-12B) loads as a `model.nano_vl.NanoVLPolicy`, which
    takes `action_format` and `max_num_tiles`; other models write Holdfast's own action form.
    `attention_window` overrides the model's window (None keeps every token); the default
    keeps the configured one.
    """
    path_or_preset = path_or_preset or default_model()
    if Path(path_or_preset).is_dir():
        from model.nano_vl import check_architecture, is_nano_vl_folder, load_nano_vl_policy, read_folder_config

        check_architecture(read_folder_config(path_or_preset), path_or_preset)
        if is_nano_vl_folder(path_or_preset):
            return load_nano_vl_policy(
                path_or_preset, device=device, action_format=action_format, max_num_tiles=max_num_tiles
            )
    if action_format not in (None, "holdfast"):
        raise ValueError(f"model {path_or_preset!r} writes actions in the 'holdfast' format only, not {action_format!r}")
    # float32 whatever the stored dtype: the shipped checkpoint is stored in bfloat16 to stay
    # small, and float32 keeps CPU inference numerically close to training.
    model = build_model(path_or_preset, device=device, seed=seed, dtype=torch.float32)
    if attention_window != "config":
        model.set_attention_window(attention_window)
    if not Path(path_or_preset).exists():
        logger.warning("model %s has random weights: its actions are noise, useful only for tests and timing", path_or_preset)
    return ModelPolicy(model, name=path_or_preset)
