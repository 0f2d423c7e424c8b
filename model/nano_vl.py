"""Nemotron-Nano-12B-v2-VL and Holotron-12B folders, loaded without remote code.

A Nano-VL-v2 folder (`config.json` with `llm_config` and `vision_config`, sharded safetensors
with `model.safetensors.index.json`, `tokenizer.json` and a chat template) becomes:

- the language model: Holdfast's hybrid (`model.hybrid.HoldfastModel`), built from the
  `hybrid_override_pattern` of `llm_config` and loaded from `language_model.*`;
- the vision tower: transformers' `RadioModel` (a RADIO ViT), loaded from
  `vision_model.radio_model.*` with the renaming of transformers' own `radio` conversion
  mapping (transformers 5.24). Its prefix tokens (class token and registers) are dropped and its
  position table is interpolated to each tile's patch grid inside `RadioModel`;
- pixel shuffle (`model.vision.pixel_shuffle`, InternVL's "v2" order) and the `mlp1` projector.

Loading is lazy: the model is built on the meta device, then each tensor is read from its
memory-mapped shard, converted, moved to the target device and put in place, so peak memory is
the model plus one tensor. Names, shapes and dtypes are checked against the shard headers
before any weight is read, and every error names the tensor and the shard.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from agent.action_formats import ActionFormat, get_action_format
from agent.actions import ActionParseError, format_action, parse_action
from model.checkpoint import CheckpointError, MODEL_TYPE, config_from_nemotron_h
from model.config import ModelConfig
from model.hybrid import HoldfastModel
from model.session import Session
from model.tiling import DEFAULT_MAX_NUM_TILES, TileGrid, image_to_tiles, tokens_per_tile
from model.vision import Projector, pixel_shuffle

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("NemotronH_Nano_VL_V2",)
# Every folder layout Holdfast loads, by config.json `architectures` entry, for error messages.
ALL_SUPPORTED_ARCHITECTURES = ("HoldfastModel", "NemotronHForCausalLM", *SUPPORTED_ARCHITECTURES)
CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
# Optional Holdfast settings next to the checkpoint, e.g. {"action_format": "json", "max_num_tiles": 6}.
SETTINGS_FILE = "holdfast.json"
DEFAULT_ACTION_FORMAT = "json"  # H Company's convention for its other agents; Holotron-12B's is unpublished
MAX_ACTION_TOKENS = 256

# timm ViT variants by name: (blocks, width, heads, MLP ratio).
VIT_VARIANTS = {
    "vit_huge_patch16_224": (32, 1280, 16, 4.0),
    "vit_large_patch16_224": (24, 1024, 16, 4.0),
    "vit_base_patch16_224": (12, 768, 12, 4.0),
    "vit_small_patch16_224": (12, 384, 6, 4.0),
    "vit_tiny_patch16_224": (12, 192, 3, 4.0),
}

# Checkpoint name fragments and the module names they load into, applied in order. The vision
# rows mirror transformers' `radio` conversion mapping; `attn.qkv` is split separately.
_RENAMES = (
    ("vision_model.radio_model.model.patch_generator.embedder.", "vision_model.embeddings.patch_projection."),
    ("vision_model.radio_model.model.patch_generator.pos_embed", "vision_model.embeddings.position_embedding"),
    ("vision_model.radio_model.model.patch_generator.cls_token.token", "vision_model.embeddings.cls_register_token"),
    ("vision_model.radio_model.model.blocks.", "vision_model.encoder.layer."),
    ("vision_model.radio_model.input_conditioner.", "input_conditioner."),
    ("vision_model.radio_model.summary_idxs", "vision_model.summary_idxs"),
    (".attn.proj.", ".attention.o_proj."),
)
_QKV = ".attn.qkv."
_QKV_TARGETS = (".attention.q_proj.", ".attention.k_proj.", ".attention.v_proj.")
# RadioModel's LayerScale factors; C-RADIO has none, so they stay at 1 and the checkpoint lacks them.
_LAYER_SCALE_SUFFIX = ".lambda1"

# bfloat16 keeps about 3 significant digits, so a stored CLIP mean of 0.4815 reads back as 0.4824.
CONDITIONER_TOLERANCE = 5e-3

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ProgressCallback = Callable[[int, int], None]  # (bytes loaded so far, total bytes)


# ---------------------------------------------------------------------------------------------
# Folder detection and configuration


def read_folder_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model folder needs its config.json")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error


def is_nano_vl_folder(path: str | Path) -> bool:
    """True for a folder whose config.json has both `llm_config` and `vision_config`."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        return False
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and "llm_config" in raw and "vision_config" in raw


def check_architecture(raw: dict, folder: str | Path) -> None:
    """Raise CheckpointError unless config.json names an architecture Holdfast loads."""
    architectures = list(raw.get("architectures") or [])
    model_type = raw.get("model_type")
    if model_type in (MODEL_TYPE, "nemotron_h") and "llm_config" not in raw:
        return
    if any(name in SUPPORTED_ARCHITECTURES for name in architectures) or model_type in SUPPORTED_ARCHITECTURES:
        return
    raise CheckpointError(
        f"{Path(folder) / CONFIG_FILE}: architecture {architectures or model_type!r} is not supported; "
        f"supported architectures: {', '.join(ALL_SUPPORTED_ARCHITECTURES)}"
    )


@dataclass(frozen=True)
class NanoVLConfig:
    """Everything the model and its image path need, read from config.json and the shard headers."""

    language: ModelConfig
    vit_name: str
    vit_depth: int
    vit_width: int
    vit_heads: int
    vit_mlp_ratio: float
    position_grid: int  # side of RADIO's square position table, in patches (128 for cpe_max_size 2048)
    prefix_tokens: int  # class token plus registers, all dropped before the projector
    summary_tokens: int  # length of `summary_idxs`, the prefix tokens RADIO reports as its summary
    patch_size: int
    tile_size: int
    downsample_ratio: float
    projector_hidden: int
    norm_mean: tuple[float, float, float]
    norm_std: tuple[float, float, float]
    use_thumbnail: bool
    img_start_token: str
    img_end_token: str
    img_context_token: str
    img_context_token_id: int | None
    dtype: torch.dtype | None

    @property
    def tokens_per_tile(self) -> int:
        return tokens_per_tile(self.tile_size, self.patch_size, self.downsample_ratio)

    @property
    def tile_grid(self) -> int:
        """Patches per tile side."""
        return self.tile_size // self.patch_size

    def radio_config(self):
        from transformers import RadioConfig

        # All prefix tokens are dropped, so only their total matters. They are all counted as
        # class tokens, which `summary_idxs` must index into.
        return RadioConfig(
            hidden_size=self.vit_width,
            num_hidden_layers=self.vit_depth,
            num_attention_heads=self.vit_heads,
            mlp_ratio=self.vit_mlp_ratio,
            patch_size=self.patch_size,
            image_size=self.tile_size,
            max_img_size=self.position_grid * self.patch_size,
            num_cls_tokens=self.prefix_tokens,
            num_registers=0,
            summary_idxs=list(range(self.summary_tokens)),
            norm_mean=list(self.norm_mean),
            norm_std=list(self.norm_std),
        )


def _require(raw: dict, key: str, path: Path):
    if key not in raw:
        raise CheckpointError(f"{path}: missing key {key!r}, which a Nano-VL-v2 config.json has")
    return raw[key]


def nano_vl_config(raw: dict, shapes: dict[str, tuple[int, ...]], folder: Path,
                   attention_window: int | None = None) -> NanoVLConfig:
    """Translate a Nano-VL-v2 config.json (and two tensor shapes from the shards) into ours."""
    path = folder / CONFIG_FILE
    llm = _require(raw, "llm_config", path)
    vision = _require(raw, "vision_config", path)
    try:
        language = config_from_nemotron_h(llm, attention_window=attention_window)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid llm_config: {error}") from error
    language = language.model_copy(update={"name": raw.get("_name_or_path") or folder.name, "vision": None})

    vit_name = (vision.get("args") or {}).get("model")
    if vit_name not in VIT_VARIANTS:
        raise CheckpointError(
            f"{path}: vision_config.args.model is {vit_name!r}; supported ViT variants: {', '.join(VIT_VARIANTS)}"
        )
    depth, width, heads, mlp_ratio = VIT_VARIANTS[vit_name]
    if raw.get("vit_hidden_size", width) != width:
        raise CheckpointError(f"{path}: vit_hidden_size {raw['vit_hidden_size']} disagrees with {vit_name} (width {width})")
    if raw.get("ps_version", "v2") != "v2":
        raise CheckpointError(f"{path}: ps_version {raw['ps_version']!r} is not supported; only pixel shuffle 'v2' is")

    position_shape = shapes.get("vision_model.radio_model.model.patch_generator.pos_embed")
    prefix_shape = shapes.get("vision_model.radio_model.model.patch_generator.cls_token.token")
    if position_shape is None or prefix_shape is None:
        missing = "pos_embed" if position_shape is None else "cls_token.token"
        raise CheckpointError(f"{folder}: missing tensor vision_model.radio_model.model.patch_generator.{missing} in every shard")
    grid = round(position_shape[-2] ** 0.5)
    if grid * grid != position_shape[-2]:
        raise CheckpointError(f"{folder}: pos_embed has {position_shape[-2]} positions, not a square grid")

    dtype_name = raw.get("torch_dtype") or llm.get("torch_dtype") or raw.get("dtype")
    return NanoVLConfig(
        language=language,
        vit_name=vit_name,
        vit_depth=depth,
        vit_width=width,
        vit_heads=heads,
        vit_mlp_ratio=mlp_ratio,
        position_grid=grid,
        prefix_tokens=prefix_shape[0],
        summary_tokens=shapes.get("vision_model.radio_model.summary_idxs", (1,))[0],
        patch_size=raw.get("patch_size", vision.get("patch_size", 16)),
        tile_size=raw.get("force_image_size", 512),
        downsample_ratio=raw.get("downsample_ratio", 0.5),
        projector_hidden=_require(raw, "projector_hidden_size", path),
        norm_mean=tuple(raw.get("norm_mean", (0.48145466, 0.4578275, 0.40821073))),
        norm_std=tuple(raw.get("norm_std", (0.26862954, 0.26130258, 0.27577711))),
        use_thumbnail=raw.get("use_thumbnail", True),
        img_start_token=raw.get("img_start_token", "<img>"),
        img_end_token=raw.get("img_end_token", "</img>"),
        img_context_token=raw.get("img_context_token", "<image>"),
        img_context_token_id=raw.get("img_context_token_id"),
        dtype=_DTYPES.get(dtype_name or ""),
    )


# ---------------------------------------------------------------------------------------------
# Shards


@dataclass
class ShardIndex:
    """The shard file of each tensor, and each tensor's shape and dtype from the shard headers."""

    folder: Path
    weight_map: dict[str, str]  # tensor name -> shard file name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    shard_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))


def read_shard_index(folder: Path) -> ShardIndex:
    """Read the index (or a single model.safetensors) and every shard's header; no weights are read."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index_path}: invalid shard index, expected a 'weight_map' object ({error})") from error
    elif (folder / SINGLE_WEIGHTS_FILE).is_file():
        weight_map = None
    else:
        raise CheckpointError(f"{folder}: missing {INDEX_FILE} (or a single {SINGLE_WEIGHTS_FILE}); the weights are not here")

    index = ShardIndex(folder, weight_map or {})
    shard_names = sorted(set(weight_map.values())) if weight_map else [SINGLE_WEIGHTS_FILE]
    for shard in shard_names:
        path = folder / shard
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {INDEX_FILE} lists shard {shard!r} but the file is not in the folder")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                names = list(handle.keys())
                for name in names:
                    tensor_slice = handle.get_slice(name)
                    index.shapes[name] = tuple(tensor_slice.get_shape())
                    index.dtypes[name] = tensor_slice.get_dtype()
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: unreadable or truncated safetensors shard ({error})") from error
        index.shard_bytes[shard] = path.stat().st_size
        if weight_map is None:
            index.weight_map.update({name: shard for name in names})
            continue
        listed = {name for name, owner in weight_map.items() if owner == shard}
        for name in sorted(listed - set(names)):
            raise CheckpointError(f"{path}: missing tensor {name!r}, which {INDEX_FILE} places in shard {shard!r}")
        for name in sorted(set(names) - listed):
            owner = weight_map.get(name)
            where = f"the index places it in {owner!r}" if owner else "the index does not list it"
            raise CheckpointError(f"{path}: unexpected tensor {name!r} in shard {shard!r}; {where}")
    return index


# ---------------------------------------------------------------------------------------------
# The model


class NanoVLModel(nn.Module):
    """Holdfast's hybrid language model fed by transformers' RadioModel through pixel shuffle and mlp1."""

    def __init__(self, config: NanoVLConfig) -> None:
        super().__init__()
        from transformers import RadioModel

        self.config = config
        self.language_model = HoldfastModel(config.language)
        self.vision_model = RadioModel(config.radio_config())
        # The tiles arrive normalised with config.json's mean and std, so the encoder's own
        # conditioner leaves the forward pass. Its buffers are still loaded and compared.
        self.input_conditioner = self.vision_model.make_preprocessor_external()
        folded = int(round(1 / config.downsample_ratio)) ** 2
        self.mlp1 = Projector(config.vit_width * folded, config.projector_hidden, config.language.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.dtype

    def vision_features(self, pixels: Tensor) -> Tensor:
        """(T, 3, S, S) normalised tiles -> (T, patches, vit_width) ViT features, prefix tokens dropped.

        NOTE: the position table is interpolated as transformers 5.24's RadioModel does (bilinear,
        align_corners=False); agreement with the original RADIO code is not checked here.
        """
        weight_dtype = self.mlp1[1].weight.dtype
        return self.vision_model(pixel_values=pixels.to(self.device, weight_dtype)).features

    def encode_tiles(self, pixels: Tensor) -> Tensor:
        """(T, 3, S, S) normalised tiles -> (T * tokens_per_tile, D) embeddings for the language model."""
        grid = self.config.tile_grid
        features = pixel_shuffle(self.vision_features(pixels), grid, grid)  # (T, grid^2 / 4, 4 * width)
        embeddings = self.mlp1(features)  # (T, tokens_per_tile, D)
        return embeddings.reshape(-1, embeddings.shape[-1])


def checkpoint_to_module_names(name: str) -> list[str]:
    """Module tensor names that one checkpoint tensor loads into (three for a fused qkv)."""
    for source, target in _RENAMES:
        name = name.replace(source, target)
    if _QKV in name:
        return [name.replace(_QKV, target) for target in _QKV_TARGETS]
    return [name]


def module_to_checkpoint_name(name: str) -> str:
    """Inverse of `checkpoint_to_module_names`, for messages about missing tensors."""
    for target in _QKV_TARGETS:
        name = name.replace(target, _QKV)
    for source, target in reversed(_RENAMES):
        name = name.replace(target, source)
    return name


def _set_tensor(model: nn.Module, name: str, tensor: Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


@dataclass
class _LoadPlan:
    """Checkpoint tensor -> module tensors, after every name and shape has been checked."""

    targets: dict[str, list[str]]  # checkpoint name -> module names
    filled: list[str]  # module tensors not in the checkpoint, set to their constant


def plan_loading(model: NanoVLModel, index: ShardIndex) -> _LoadPlan:
    """Check names, shapes and dtypes against the model before reading any weight."""
    expected = dict(model.state_dict(keep_vars=True))
    if model.config.language.tie_embeddings:
        expected.pop("language_model.lm_head.weight", None)
    filled = [name for name in expected if name.endswith(_LAYER_SCALE_SUFFIX)]
    # NOTE: the published folders' full tensor lists were not available here; any tensor outside
    # the layout above (an extra RADIO head, say) is rejected by name rather than skipped.
    targets: dict[str, list[str]] = {}
    for stored_name, shard in sorted(index.weight_map.items()):
        names = checkpoint_to_module_names(stored_name)
        if any(name not in expected for name in names):
            raise CheckpointError(
                f"{index.folder / shard}: unexpected tensor {stored_name!r} in shard {shard!r}; "
                f"it has no place in a {model.config.vit_name} + Nemotron-H model"
            )
        expected_shape = list(expected[names[0]].shape)
        expected_shape[0] *= len(names)  # a fused qkv stacks q, k and v along the output rows
        stored_shape = index.shapes[stored_name]
        if tuple(stored_shape) != tuple(expected_shape):
            raise CheckpointError(
                f"{index.folder / shard}: tensor {stored_name!r} in shard {shard!r} has shape {tuple(stored_shape)}, "
                f"the model built from config.json expects {tuple(expected_shape)}"
            )
        stored_float = index.dtypes[stored_name] in ("F64", "F32", "F16", "BF16")
        if stored_float != expected[names[0]].is_floating_point():
            raise CheckpointError(
                f"{index.folder / shard}: tensor {stored_name!r} in shard {shard!r} has dtype {index.dtypes[stored_name]}, "
                f"the model expects {expected[names[0]].dtype}"
            )
        targets[stored_name] = names
    covered = {name for names in targets.values() for name in names} | set(filled)
    missing = sorted({module_to_checkpoint_name(name) for name in expected if name not in covered})
    if missing:
        shown = ", ".join(repr(name) for name in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        shards = ", ".join(index.shards)
        raise CheckpointError(f"{index.folder}: missing tensors {shown}; not found in any shard ({shards})")
    return _LoadPlan(targets, filled)


def _build_on_meta(config: NanoVLConfig) -> NanoVLModel:
    with torch.device("meta"):
        return NanoVLModel(config)


def load_nano_vl(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 attention_window: int | None = None, progress: ProgressCallback | None = None) -> NanoVLModel:
    """Load a Nano-VL-v2 folder onto device, in the checkpoint's dtype unless `dtype` is given.

    attention_window bounds each attention layer's cache (None keeps every token, as the
    published model does). `progress(done_bytes, total_bytes)` is called after each tensor.
    """
    folder = Path(folder)
    raw = read_folder_config(folder)
    check_architecture(raw, folder)
    if "llm_config" not in raw:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not a vision-language folder (no llm_config); load it with --model as a plain checkpoint")
    index = read_shard_index(folder)
    config = nano_vl_config(raw, index.shapes, folder, attention_window)
    target_dtype = dtype or config.dtype or torch.float32
    model = _build_on_meta(config)
    plan = plan_loading(model, index)
    _load_tensors(model, index, plan, torch.device(device), target_dtype, progress)
    _check_conditioner(model, folder)
    logger.info(
        "loaded %s from %s: %s language and %s vision parameters, %s on %s",
        config.language.name, folder,
        f"{model.language_model.num_parameters():,}",
        f"{sum(p.numel() for n, p in model.named_parameters() if not n.startswith('language_model.')):,}",
        str(target_dtype).removeprefix("torch."), device,
    )
    return model.eval()


def _load_tensors(model: NanoVLModel, index: ShardIndex, plan: _LoadPlan, device: torch.device,
                  dtype: torch.dtype, progress: ProgressCallback | None) -> None:
    total = sum(index.shard_bytes.values())
    done = 0
    shards = index.shards
    for number, shard in enumerate(shards, start=1):
        path = index.folder / shard
        logger.info("reading shard %d/%d %s (%.1f MiB)", number, len(shards), shard, index.shard_bytes[shard] / 2**20)
        started = time.perf_counter()
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for stored_name in handle.keys():
                try:
                    tensor = handle.get_tensor(stored_name)
                except (SafetensorError, OSError) as error:
                    raise CheckpointError(f"{path}: tensor {stored_name!r} in shard {shard!r} cannot be read ({error})") from error
                if tensor.is_floating_point() and not stored_name.endswith(("norm_mean", "norm_std")):
                    tensor = tensor.to(dtype)
                names = plan.targets[stored_name]
                parts = tensor.chunk(len(names), dim=0) if len(names) > 1 else (tensor,)
                for name, part in zip(names, parts):
                    _set_tensor(model, name, part.to(device))
                done += tensor.numel() * tensor.element_size()
                if progress is not None:
                    progress(done, total)
        logger.debug("shard %s read in %.2f s", shard, time.perf_counter() - started)
    for name in plan.filled:
        _set_tensor(model, name, torch.ones(model.get_parameter(name).shape, dtype=dtype, device=device))
    if model.config.language.tie_embeddings:
        model.language_model.lm_head.weight = model.language_model.backbone.embeddings.weight
    leftover = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if leftover:
        raise CheckpointError(f"{index.folder}: tensors {leftover[:5]} were not loaded; this is a bug in the loader")


def _check_conditioner(model: NanoVLModel, folder: Path) -> None:
    """Warn when the ViT's stored normalisation differs from the mean and std the tiles get."""
    stored_mean = model.input_conditioner.norm_mean.flatten().float().cpu()
    stored_std = model.input_conditioner.norm_std.flatten().float().cpu()
    mean = torch.tensor(model.config.norm_mean)
    std = torch.tensor(model.config.norm_std)
    same_mean = torch.allclose(stored_mean, mean, atol=CONDITIONER_TOLERANCE)
    same_std = torch.allclose(stored_std, std, atol=CONDITIONER_TOLERANCE)
    if not (same_mean and same_std):
        logger.warning(
            "%s: the vision encoder's stored mean/std %s/%s differ from config.json's norm_mean/norm_std %s/%s; "
            "tiles are normalised with config.json's values",
            folder, stored_mean.tolist(), stored_std.tolist(), mean.tolist(), std.tolist(),
        )


# ---------------------------------------------------------------------------------------------
# Prompt: the chat template cut into the pieces a stream needs


_SENTINELS = ("HOLDFAST_SENTINEL_USER_ONE", "HOLDFAST_SENTINEL_ASSISTANT", "HOLDFAST_SENTINEL_USER_TWO")


@dataclass(frozen=True)
class ChatPieces:
    """The chat template's text around each message, so an episode can be fed turn by turn.

    The stream is: `prefix` first user message `generation` [assistant action] `next_user` second
    user message `generation` [assistant action] ...
    """

    prefix: str  # conversation start up to the first user message's content
    generation: str  # after a user message's content, up to where the assistant's text begins
    next_user: str  # after an assistant message's content, up to the next user message's content


def chat_pieces(tokenizer) -> ChatPieces:
    """Render the folder's chat template with placeholder contents and cut it at them."""
    first, answer, second = _SENTINELS
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": second},
    ]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"the folder's chat template cannot render a user/assistant conversation ({error})") from error
    positions = [text.find(sentinel) for sentinel in _SENTINELS]
    if -1 in positions or positions != sorted(positions):
        raise CheckpointError("the folder's chat template drops or reorders message contents; Holdfast cannot stream it")
    ends = [position + len(sentinel) for position, sentinel in zip(positions, _SENTINELS)]
    # NOTE: the text between a user message and the assistant's reply is taken from the
    # generation prompt; a template that renders past assistant turns differently (for example
    # one that strips reasoning) makes the stream differ from what the template would render.
    return ChatPieces(prefix=text[: positions[0]], generation=text[ends[2]:], next_user=text[ends[1]: positions[2]])


def load_folder_tokenizer(folder: str | Path):
    """The folder's tokenizer and chat template through transformers, offline."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder / 'tokenizer.json'}: missing; a Nano-VL folder needs its tokenizer next to config.json")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.chat_template is None:
        raise CheckpointError(
            f"{folder}: no chat template (tokenizer_config.json 'chat_template' or chat_template.jinja); "
            "the prompt format cannot be built without it"
        )
    return tokenizer


# ---------------------------------------------------------------------------------------------
# The policy


def read_settings(folder: str | Path) -> dict:
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    unknown = sorted(set(settings) - {"action_format", "max_num_tiles"})
    if unknown:
        raise CheckpointError(f"{path}: unknown settings {unknown}; known: action_format, max_num_tiles")
    return settings


class NanoVLPolicy:
    """A Nano-VL model as an `agent.policy.Policy`: one streaming session per episode.

    The model reads and writes actions in its action format; at the policy boundary they are
    Holdfast's compact text (`agent.actions`), so the agent loop and the evaluator need no change.
    """

    def __init__(self, model: NanoVLModel, tokenizer, action_format: ActionFormat,
                 max_num_tiles: int = DEFAULT_MAX_NUM_TILES, name: str | None = None,
                 max_action_tokens: int = MAX_ACTION_TOKENS) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.action_format = action_format
        self.max_num_tiles = max_num_tiles
        self.name = name or model.config.language.name
        self.max_action_tokens = max_action_tokens
        self.pieces = chat_pieces(tokenizer)
        self.image_start_ids = self._encode(model.config.img_start_token)
        self.image_end_ids = self._encode(model.config.img_end_token)
        self.image_context_id = self._context_id()
        self.stop_id, self.stop_text = self._stop_token()
        self.session: Session | None = None
        self.pending_text = ""  # template text owed before the next user content
        self.last_grid: TileGrid | None = None
        self.last_step_tokens = 0  # tokens fed by the last observe: the step cost before the action
        self.last_model_text = ""  # the action as the model wrote it, before translation
        self.last_parse_error: str | None = None
        self.last_latency_ms = 0.0

    # Tokens ---------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _context_id(self) -> int:
        ids = self._encode(self.model.config.img_context_token)
        if len(ids) != 1:
            raise CheckpointError(
                f"image context token {self.model.config.img_context_token!r} is not a single token in tokenizer.json (ids {ids})"
            )
        stored = self.model.config.img_context_token_id
        if stored is not None and stored != ids[0]:
            raise CheckpointError(f"config.json img_context_token_id={stored} but tokenizer.json gives {ids[0]}")
        return ids[0]

    def _stop_token(self) -> tuple[int, str]:
        """The token that ends an assistant turn: the first token after the assistant content."""
        ids = self._encode(self.pieces.next_user)
        special = set(self.tokenizer.all_special_ids)
        if ids and ids[0] in special:
            return ids[0], self.tokenizer.decode(ids[:1])
        if self.tokenizer.eos_token_id is None:
            raise CheckpointError("the chat template ends assistant turns without a special token and the tokenizer has no eos token")
        return self.tokenizer.eos_token_id, ""

    def _embed(self, ids: list[int]) -> Tensor:
        tensor = torch.tensor(ids, dtype=torch.long, device=self.model.device)
        return self.model.language_model.embed_tokens(tensor)  # (L, D)

    def _require_session(self) -> Session:
        if self.session is None:
            raise RuntimeError("call start(instruction) before feeding the episode")
        return self.session

    # Policy ---------------------------------------------------------------------------------

    def start(self, instruction: str) -> None:
        self.session = Session(self.model.language_model)
        content = f"{self.action_format.prompt}\n\nTask: {instruction}\n"
        self.session.feed_tokens(self._encode(self.pieces.prefix + content))
        self.pending_text = ""

    @torch.no_grad()
    def image_span(self, screenshot: Image.Image) -> tuple[Tensor, TileGrid]:
        """`<img>` + one embedding per image token + `</img>`, as (L, D) embeddings."""
        config = self.model.config
        pixels, grid = image_to_tiles(
            screenshot, config.norm_mean, config.norm_std, self.max_num_tiles, config.tile_size, config.use_thumbnail
        )
        features = self.model.encode_tiles(pixels)  # (tiles * tokens_per_tile, D)
        ids = torch.tensor(
            [*self.image_start_ids, *[self.image_context_id] * features.shape[0], *self.image_end_ids],
            device=self.model.device,
        )
        embeds = self.model.language_model.embed_tokens(ids)
        # The image tokens' embeddings are replaced by the image features, as the model was trained.
        embeds[ids == self.image_context_id] = features.to(embeds.dtype)
        return embeds, grid

    @torch.no_grad()
    def observe(self, screenshot: Image.Image) -> None:
        session = self._require_session()
        image, grid = self.image_span(screenshot)
        before = self._embed(self._encode(self.pending_text)) if self.pending_text else image[:0]
        after = self._embed(self._encode(self.pieces.generation))
        span = torch.cat([before, image, after])[None]  # (1, L, D)
        session.feed_embeddings(span)
        self.pending_text = ""
        self.last_step_tokens = span.shape[1]
        if grid != self.last_grid:
            logger.info(
                "screenshot %dx%d: %dx%d tiles%s, %d image tokens, %d tokens per step before the action",
                screenshot.width, screenshot.height, grid.cols, grid.rows, " + thumbnail" if grid.thumbnail else "",
                grid.num_tiles * self.model.config.tokens_per_tile, self.last_step_tokens,
            )
        self.last_grid = grid

    def predict(self, *, commit: bool = True) -> str:
        session = self._require_session()
        started = time.perf_counter()
        mark = None if commit else session.checkpoint()
        ids = session.generate(self.max_action_tokens, stop_id=self.stop_id)[0]
        stopped = bool(ids) and ids[-1] == self.stop_id
        text = self.tokenizer.decode(ids[:-1] if stopped else ids, skip_special_tokens=True)
        if mark is not None:
            session.rollback(mark)
        elif not stopped:
            # Cut off before the end of the turn: close it so the next step starts cleanly.
            session.feed_tokens([self.stop_id])
        if commit:
            self.pending_text = self._after_stop()
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        return self._to_holdfast(text)

    def feed_action(self, action_text: str) -> None:
        session = self._require_session()
        try:
            text = self.action_format.format(parse_action(action_text))
        except ActionParseError:
            # Not an action in Holdfast's form: feed it as the model would have written it.
            text = action_text
        session.feed_tokens([*self._encode(text), self.stop_id])
        self.pending_text = self._after_stop()

    def state_bytes(self) -> int:
        return 0 if self.session is None else self.session.state_bytes()

    def _after_stop(self) -> str:
        return self.pieces.next_user[len(self.stop_text):] if self.pieces.next_user.startswith(self.stop_text) else self.pieces.next_user

    def _to_holdfast(self, text: str) -> str:
        """The model's action in Holdfast's compact form, or its raw text when it does not parse."""
        self.last_model_text = text
        try:
            action = self.action_format.parse(text)
        except ActionParseError as error:
            self.last_parse_error = str(error)
            logger.debug("model output is not a %s action: %s", self.action_format.name, error)
            return text
        self.last_parse_error = None
        return format_action(action)


def load_nano_vl_policy(folder: str | Path, device: str = "cpu", action_format: str | None = None,
                        max_num_tiles: int | None = None, dtype: torch.dtype | None = None,
                        attention_window: int | None = None) -> NanoVLPolicy:
    """Load a Nano-VL-v2 folder as a policy. Settings: the arguments, else the folder's
    holdfast.json, else the defaults (JSON actions, 12 tiles)."""
    folder = Path(folder)
    settings = read_settings(folder)
    format_name = action_format or settings.get("action_format") or DEFAULT_ACTION_FORMAT
    tiles = max_num_tiles or settings.get("max_num_tiles") or DEFAULT_MAX_NUM_TILES
    chosen_format = get_action_format(format_name)
    model = load_nano_vl(folder, device=device, dtype=dtype, attention_window=attention_window)
    tokenizer = load_folder_tokenizer(folder)
    logger.info("action format %s, at most %d tiles per screenshot", format_name, tiles)
    return NanoVLPolicy(model, tokenizer, chosen_format, max_num_tiles=tiles, name=str(folder))
