"""Memory arithmetic for `holdfast bench --analytic`: weights and per-session state from a config.

Nothing here builds a model. Parameter counts follow the layer definitions in `model/` term by
term, and a test checks them against a model built on the meta device. State sizes follow the
session's storage: Mamba-2 SSM states in float32, conv states and key-value caches in the model
dtype, and an attention cache keeps at most `attention_window` tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model.config import CASE_MODES, POINTER_KEY_SIZE, ModelConfig, VisionConfig

# Tokens of one agent step besides the image span and the action: <step> <image> before the
# image embeddings and </image> <action> after them (model.tokenizer's special tokens).
SPECIAL_TOKENS_PER_STEP = 4

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def tokens_per_step(image_tokens: int, action_tokens: int) -> int:
    """Tokens one agent step adds to the history: special tokens, the image span, the action."""
    return SPECIAL_TOKENS_PER_STEP + image_tokens + action_tokens


def parse_size(text: str) -> int:
    """Parse a memory size such as `80GiB`, `141GB`, `512MiB` or a plain byte count into bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid memory size {text!r}; write a number with a unit, e.g. 80GiB, 141GB or 512MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


# Parameter counts ----------------------------------------------------------------------------


def _mamba_parameters(config: ModelConfig) -> int:
    heads, d_inner, conv_dim, width = config.mamba_heads, config.d_inner, config.conv_dim, config.hidden_size
    in_proj = width * (d_inner + conv_dim + heads)  # z, xBC and dt in one projection
    conv = conv_dim * config.conv_kernel + conv_dim  # depthwise weights plus bias
    per_head = 3 * heads  # dt_bias, A_log, D
    return in_proj + conv + per_head + d_inner + d_inner * width  # gated norm weight, out_proj


def _attention_parameters(config: ModelConfig) -> int:
    q_size = config.attention_heads * config.head_dim
    kv_size = config.kv_heads * config.head_dim
    return 2 * config.hidden_size * q_size + 2 * config.hidden_size * kv_size  # q, o and k, v


def _mlp_parameters(config: ModelConfig) -> int:
    return 2 * config.hidden_size * config.mlp_hidden  # up and down, no gate, no bias


def _head_parameters(config: ModelConfig) -> int:
    total = 0
    if config.pointer_subdivision is not None:
        total += config.hidden_size * POINTER_KEY_SIZE * (config.pointer_subdivision**2 + 1)  # queries, key
    if config.copy_instruction:
        total += 2 * config.hidden_size * POINTER_KEY_SIZE + config.hidden_size + 1  # query, key, gate
    if config.copy_case:
        total += (config.hidden_size + 1) * len(CASE_MODES)  # case-mode logits
    return total


def language_parameters(config: ModelConfig) -> int:
    """Parameters of the language model: embeddings, blocks with their norms, final norm, head
    and the pointer and copy heads."""
    per_kind = {
        "mamba": _mamba_parameters(config),
        "attention": _attention_parameters(config),
        "mlp": _mlp_parameters(config),
    }
    blocks = sum(per_kind[kind] + config.hidden_size for kind in config.layer_kinds)  # + pre-norm
    embeddings = config.vocab_size * config.hidden_size
    head = 0 if config.tie_embeddings else embeddings
    return embeddings + blocks + config.hidden_size + head + _head_parameters(config)


def vision_parameters(vision: VisionConfig | None, hidden_size: int) -> int:
    """Parameters of the ViT and the mlp1 projector into a language model of width hidden_size."""
    if vision is None:
        return 0
    width = vision.width
    mlp_hidden = int(width * vision.mlp_ratio)
    patches = vision.position_grid**2 if vision.position_grid else vision.grid_height * vision.grid_width
    stem = 3 * vision.patch_size**2 * width + patches * width + vision.prefix_tokens * width
    block = (
        4 * width  # two LayerNorms, weight and bias
        + width * 3 * width + 3 * width  # qkv
        + width * width + width  # proj
        + width * mlp_hidden + mlp_hidden + mlp_hidden * width + width  # fc1, fc2
    )
    projector = 4 * width + 4 * width * vision.projector_hidden + vision.projector_hidden * hidden_size
    return stem + vision.depth * block + projector


def total_parameters(config: ModelConfig) -> int:
    return language_parameters(config) + vision_parameters(config.vision, config.hidden_size)


# Session state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionMemory:
    """State bytes one session holds after a number of agent steps."""

    steps: int
    tokens: int  # tokens the session has consumed
    ssm_bytes: int
    conv_bytes: int
    kv_bytes: int
    pointer_bytes: int = 0  # the pointer head's keys for the last screenshot

    @property
    def total_bytes(self) -> int:
        return self.ssm_bytes + self.conv_bytes + self.kv_bytes + self.pointer_bytes


def kv_bytes_per_token(config: ModelConfig, dtype: str = "bfloat16") -> int:
    """Key-value cache bytes one token adds across every attention layer."""
    attention_layers = config.layer_kinds.count("attention")
    return attention_layers * 2 * config.kv_heads * config.head_dim * DTYPE_BYTES[dtype]


def session_memory(config: ModelConfig, steps: int, step_tokens: int, dtype: str = "bfloat16") -> SessionMemory:
    """State of one session after `steps` agent steps of `step_tokens` tokens each."""
    tokens = steps * step_tokens
    state = config.state_bytes(tokens, dtype_bytes=DTYPE_BYTES[dtype])
    return SessionMemory(steps, tokens, state["ssm"], state["conv"], state["kv"], state["pointer"])


def sessions_that_fit(gpu_bytes: int, weights_bytes: int, session_bytes: int) -> int:
    """Concurrent sessions whose state fits next to the weights.

    NOTE: an upper bound; activations, the CUDA context and allocator fragmentation also take
    memory, and they depend on the serving engine and batch shape, so they are not modelled.
    """
    free = gpu_bytes - weights_bytes
    if free <= 0:
        return 0
    if session_bytes <= 0:
        raise ValueError(f"session_bytes must be positive, got {session_bytes}; a model without state has no limit")
    return free // session_bytes


def analytic_report(
    config: ModelConfig,
    gpu_bytes: int,
    history_steps: int,
    image_tokens: int,
    action_tokens: int,
    dtype: str = "bfloat16",
    step_table: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 512),
) -> dict:
    """Memory per session against steps, weights, and sessions per GPU for the hybrid (with and
    without its attention window) and its Transformer twin, as a JSON-ready dict."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    if history_steps < 1:
        raise ValueError(f"history_steps must be at least 1, got {history_steps}")
    step_tokens = tokens_per_step(image_tokens, action_tokens)
    steps = sorted({s for s in step_table if s <= history_steps} | {history_steps})
    variants = {
        "hybrid": config,
        "hybrid-full": config.with_window(None),
        "transformer": config.transformer_twin(),
    }
    models = {}
    for name, variant in variants.items():
        weights = total_parameters(variant) * DTYPE_BYTES[dtype]
        at_history = session_memory(variant, history_steps, step_tokens, dtype)
        models[name] = {
            "pattern": variant.pattern,
            "attention_window": variant.attention_window,
            "language_parameters": language_parameters(variant),
            "vision_parameters": vision_parameters(variant.vision, variant.hidden_size),
            "weights_bytes": weights,
            "kv_bytes_per_token": kv_bytes_per_token(variant, dtype),
            "memory_by_step": [
                {
                    "steps": m.steps, "tokens": m.tokens, "ssm_bytes": m.ssm_bytes,
                    "conv_bytes": m.conv_bytes, "kv_bytes": m.kv_bytes, "pointer_bytes": m.pointer_bytes,
                    "total_bytes": m.total_bytes,
                }
                for m in (session_memory(variant, s, step_tokens, dtype) for s in steps)
            ],
            "session_bytes_at_history": at_history.total_bytes,
            "sessions_per_gpu": sessions_that_fit(gpu_bytes, weights, at_history.total_bytes),
        }
    return {
        "preset": config.name,
        "dtype": dtype,
        "ssm_state_dtype": "float32",
        "gpu_memory_bytes": gpu_bytes,
        "history_steps": history_steps,
        "image_tokens": image_tokens,
        "action_tokens": action_tokens,
        "tokens_per_step": step_tokens,
        "models": models,
        "note": "sessions_per_gpu is an upper bound: activations, CUDA context and fragmentation are not counted",
    }
