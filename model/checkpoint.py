"""Model folders: `config.json` plus `model.safetensors`, with Hugging Face parameter names.

A folder written here loads back exactly; a Nemotron-H language-model checkpoint (its
`backbone.*` / `lm_head` tensors, or `model.*` as transformers' NemotronHForCausalLM names them,
or `language_model.*` inside a vision-language checkpoint) loads into the language model.
Weights are read with safetensors only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from model.config import ModelConfig, get_preset, preset_names
from model.hybrid import HoldfastModel

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "holdfast"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and tensor."""


def save_model(model: HoldfastModel, folder: str | Path, extra: dict | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into folder (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype_name = next(name for name, dtype in _DTYPES.items() if dtype == model.dtype)
    config = {
        "model_type": MODEL_TYPE,
        "architectures": ["HoldfastModel"],
        "torch_dtype": dtype_name,
        "holdfast": json.loads(model.config.model_dump_json()),
        **(extra or {}),
    }
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    if model.config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    # Write to temporary names, then rename, so an interrupted save never leaves a folder whose
    # config and weights disagree.
    weights_tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
    config_tmp = folder / (CONFIG_FILE + ".tmp")
    config_tmp.write_text(json.dumps(config, indent=2) + "\n")
    weights_tmp.replace(folder / WEIGHTS_FILE)
    config_tmp.replace(folder / CONFIG_FILE)
    return folder


def config_from_nemotron_h(hf: dict, attention_window: int | None = None) -> ModelConfig:
    """Translate a transformers NemotronH `config.json` (model_type `nemotron_h`) into ours."""
    if "hybrid_override_pattern" in hf:
        pattern = hf["hybrid_override_pattern"]
    else:
        letters = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-"}
        kinds = hf.get("layers_block_type") or hf.get("layer_types") or []
        unknown = sorted({k for k in kinds if k not in letters})
        if unknown or not kinds:
            raise CheckpointError(f"unsupported NemotronH layer types {unknown or kinds}; supported: mamba, attention, mlp")
        pattern = "".join(letters[k] for k in kinds)
    return ModelConfig(
        name=hf.get("_name_or_path") or "nemotron-h",
        pattern=pattern,
        hidden_size=hf["hidden_size"],
        vocab_size=hf["vocab_size"],
        mamba_heads=hf["mamba_num_heads"],
        mamba_head_dim=hf["mamba_head_dim"],
        ssm_state_size=hf["ssm_state_size"],
        n_groups=hf.get("n_groups", hf.get("mamba_n_groups", 8)),
        conv_kernel=hf.get("conv_kernel", hf.get("mamba_d_conv", 4)),
        chunk_size=hf.get("chunk_size", hf.get("mamba_chunk_size", 128)),
        time_step_min=hf.get("time_step_min", hf.get("mamba_dt_min", 0.001)),
        attention_heads=hf["num_attention_heads"],
        kv_heads=hf["num_key_value_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        attention_window=attention_window,
        mlp_hidden=hf["intermediate_size"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        vision=None,
    )


def read_config(folder: Path) -> tuple[ModelConfig, torch.dtype | None]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model folder needs config.json and {WEIGHTS_FILE}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    model_type = raw.get("model_type")
    dtype = _DTYPES.get(raw.get("torch_dtype") or raw.get("dtype") or "")
    try:
        if model_type == MODEL_TYPE:
            return ModelConfig.model_validate(raw["holdfast"]), dtype
        if model_type == "nemotron_h":
            return config_from_nemotron_h(raw), dtype
    except (KeyError, ValidationError) as error:
        raise CheckpointError(f"{path}: invalid model configuration: {error}") from error
    raise CheckpointError(
        f"{path}: model_type {model_type!r} is not supported; supported: {MODEL_TYPE!r} (Holdfast) and "
        "'nemotron_h' (a Nemotron-H language model)"
    )


def _canonical_name(name: str) -> str:
    """Map the prefixes other layouts use onto ours."""
    if name.startswith("language_model."):
        name = name[len("language_model."):]
    if name.startswith("model."):
        name = "backbone." + name[len("model."):]
    return name


def load_weights(model: HoldfastModel, path: Path, dtype: torch.dtype | None = None,
                 allow_missing: bool = False) -> list[str]:
    """Copy every tensor of a safetensors file into the model, checking names, shapes and dtypes.

    Returns the model tensors the file lacks. They raise CheckpointError unless `allow_missing`
    is set, so that a model with a new head can start from an older checkpoint.
    """
    expected = model.state_dict()
    if model.config.tie_embeddings:
        expected.pop("lm_head.weight", None)
    loaded: set[str] = set()
    try:
        handle_context = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({error})") from error
    with handle_context as handle:
        for stored_name in handle.keys():
            name = _canonical_name(stored_name)
            if name not in expected:
                raise CheckpointError(
                    f"{path}: unexpected tensor {stored_name!r}; it has no place in model {model.config.name!r}"
                )
            try:
                tensor = handle.get_tensor(stored_name)
            except (SafetensorError, OSError) as error:
                raise CheckpointError(f"{path}: tensor {stored_name!r} cannot be read ({error})") from error
            target = expected[name]
            if tensor.shape != target.shape:
                raise CheckpointError(
                    f"{path}: tensor {stored_name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(target.shape)}"
                )
            if not tensor.is_floating_point() or (dtype is not None and tensor.dtype != dtype):
                raise CheckpointError(
                    f"{path}: tensor {stored_name!r} has dtype {tensor.dtype}, the checkpoint declares {dtype or 'a float type'}"
                )
            with torch.no_grad():
                target.copy_(tensor)
            loaded.add(name)
    missing = sorted(set(expected) - loaded)
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{path}: missing tensors {shown}")
    return missing


def load_model(folder: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> HoldfastModel:
    """Load a model folder (config.json + model.safetensors) onto device."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder (expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config, stored_dtype = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; the folder has config.json but no weights")
    model = HoldfastModel(config)
    if stored_dtype is not None:
        model.to(stored_dtype)
    load_weights(model, weights, stored_dtype)
    model.to(device=device, dtype=dtype or model.dtype)
    logger.info("loaded %s (%s parameters) from %s", config.name, f"{model.num_parameters():,}", folder)
    return model.eval()


def build_model(path_or_preset: str, device: str = "cpu", seed: int = 0, dtype: torch.dtype | None = None) -> HoldfastModel:
    """Build a model from a folder, or from a preset name with seeded random weights."""
    if Path(path_or_preset).exists():
        return load_model(path_or_preset, device=device, dtype=dtype)
    if path_or_preset not in preset_names():
        if "/" in path_or_preset or path_or_preset.startswith("."):
            raise CheckpointError(f"{path_or_preset}: model folder not found; check the path")
        raise CheckpointError(
            f"{path_or_preset!r} is neither a model folder nor a preset; presets: {', '.join(preset_names())}"
        )
    torch.manual_seed(seed)
    model = HoldfastModel(get_preset(path_or_preset)).to(device=device, dtype=dtype or torch.float32)
    logger.info("built preset %s with random weights (seed %d)", path_or_preset, seed)
    return model.eval()
