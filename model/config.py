"""Model configuration and the named presets.

The layer layout is a Nemotron-H pattern string: `M` a Mamba-2 mixer, `*` attention, `-` an MLP.
Each letter is one residual block (pre-norm, mixer, add), as in Nemotron-H.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LAYER_KINDS = {"M": "mamba", "*": "attention", "-": "mlp"}
# Width of the pointer head's keys (model.pointer): a session keeps one key per image token.
POINTER_KEY_SIZE = 64
# The copy head's case modes (model.copy): keep a copied byte, upper-case it or lower-case it.
CASE_MODES = ("keep", "upper", "lower")


class VisionConfig(BaseModel):
    """A ViT over patches, pixel shuffle, then an MLP projector into the language model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_height: int = Field(gt=0, description="input height in pixels after resize and pad")
    image_width: int = Field(gt=0, description="input width in pixels after resize and pad")
    patch_size: int = Field(gt=0)
    depth: int = Field(ge=1, description="ViT blocks")
    width: int = Field(gt=0, description="ViT hidden size")
    heads: int = Field(gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    # Pixel shuffle folds each 2x2 patch neighbourhood into one token (ratio 0.5), as
    # Nemotron-Nano-VL does, so the language model gets one token per four patches.
    pixel_shuffle_ratio: float = 0.5
    projector_hidden: int = Field(gt=0, description="hidden size of the mlp1 projector")
    # Prefix tokens (class + registers) that the ViT carries and drops before the projector.
    prefix_tokens: int = Field(0, ge=0)
    # Side of the stored square position-embedding table when it differs from the patch grid.
    # RADIO keeps a 128x128 table and interpolates it to each tile's 32x32 grid; None stores
    # exactly one embedding per patch of the input.
    position_grid: int | None = Field(None, gt=0)
    # CLIP normalisation, the values Nemotron-Nano-VL's config uses.
    norm_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    norm_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @model_validator(mode="after")
    def _check(self) -> VisionConfig:
        for name, size in (("image_height", self.image_height), ("image_width", self.image_width)):
            if size % self.patch_size:
                raise ValueError(f"vision.{name}={size} is not a multiple of patch_size={self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"vision.heads={self.heads} does not divide vision.width={self.width}")
        if self.pixel_shuffle_ratio != 0.5:
            raise ValueError(f"vision.pixel_shuffle_ratio must be 0.5 (2x2 folding), got {self.pixel_shuffle_ratio}")
        if self.grid_height % 2 or self.grid_width % 2:
            raise ValueError(
                f"the patch grid {self.grid_height}x{self.grid_width} must be even in both directions for pixel shuffle"
            )
        return self

    @property
    def grid_height(self) -> int:
        return self.image_height // self.patch_size

    @property
    def grid_width(self) -> int:
        return self.image_width // self.patch_size

    @property
    def image_tokens(self) -> int:
        """Language-model tokens per screenshot after pixel shuffle."""
        return (self.grid_height // 2) * (self.grid_width // 2)


class ModelConfig(BaseModel):
    """The language model (Nemotron-H layout) plus an optional vision encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    pattern: str = Field(description="Nemotron-H layer pattern: M Mamba-2, * attention, - MLP")
    hidden_size: int = Field(gt=0, description="model width D")
    vocab_size: int = Field(gt=0)
    # Mamba-2 sizes. d_inner = mamba_heads * mamba_head_dim.
    mamba_heads: int = Field(gt=0, description="H")
    mamba_head_dim: int = Field(gt=0, description="P")
    ssm_state_size: int = Field(gt=0, description="N")
    n_groups: int = Field(gt=0, description="G: heads share B and C within a group")
    conv_kernel: int = Field(4, ge=2)
    chunk_size: int = Field(gt=0, description="length of the chunks of the chunked scan")
    # transformers' NemotronH clamps softplus(dt) from below at time_step_min; we do the same so
    # that weights behave identically in both.
    time_step_min: float = Field(0.001, ge=0)
    # Attention sizes.
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    # Past tokens each attention layer keeps in its cache; a token attends to those and to
    # itself. None keeps every token (a standard Nemotron-H, and the Transformer twin).
    attention_window: int | None = Field(None, gt=0)
    # Rotary position embeddings in attention. Nemotron-H applies none (its Mamba layers carry
    # position); the Transformer twin has no Mamba layers, so it needs them.
    rope: bool = False
    rope_theta: float = 10000.0
    mlp_hidden: int = Field(gt=0, description="MLP hidden size; activation is squared ReLU, no gate")
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    vision: VisionConfig | None = None
    # Pointer head (model.pointer): screen coordinates are chosen over the current screenshot's
    # image tokens, each token's cell split into this many sub-cells per side, instead of being
    # written digit by digit. None writes them as text, as a published checkpoint does.
    pointer_subdivision: int | None = Field(None, ge=1, le=16)
    # Copy head (model.copy): each action token may be copied from the instruction's bytes, as
    # in a pointer-generator network, so typed text comes from the instruction rather than
    # being recalled. Needs byte tokens; a published checkpoint has none.
    copy_instruction: bool = False
    # The copy head may also upper- or lower-case the ASCII letters it copies (model.copy), for
    # tasks that ask for the instruction's text in another case.
    copy_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        if not pattern:
            raise ValueError("pattern is empty; give at least one layer letter (M, * or -)")
        unknown = sorted({c for c in pattern if c not in LAYER_KINDS})
        if unknown:
            raise ValueError(
                f"pattern {pattern!r} has unknown layer letters {unknown}; use M (Mamba-2), * (attention), - (MLP)"
            )
        return pattern

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if self.attention_heads % self.kv_heads:
            raise ValueError(
                f"kv_heads={self.kv_heads} does not divide attention_heads={self.attention_heads} (grouped-query attention)"
            )
        if self.mamba_heads % self.n_groups:
            raise ValueError(f"n_groups={self.n_groups} does not divide mamba_heads={self.mamba_heads}")
        if self.d_inner % self.n_groups:
            raise ValueError(f"n_groups={self.n_groups} does not divide d_inner={self.d_inner}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")
        if self.vision is not None and self.vision.projector_hidden <= 0:
            raise ValueError("vision.projector_hidden must be positive")
        if self.pointer_subdivision is not None and self.vision is None:
            raise ValueError("pointer_subdivision needs a vision encoder: the pointer head points at image tokens")
        if self.copy_case and not self.copy_instruction:
            raise ValueError(
                "invalid copy_case=True without copy_instruction: case modes belong to the copy head; "
                "set copy_instruction=True or copy_case=False"
            )
        return self

    @property
    def d_inner(self) -> int:
        return self.mamba_heads * self.mamba_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x, B and C together."""
        return self.d_inner + 2 * self.n_groups * self.ssm_state_size

    @property
    def layer_kinds(self) -> list[str]:
        return [LAYER_KINDS[c] for c in self.pattern]

    @property
    def is_transformer(self) -> bool:
        return "M" not in self.pattern

    def transformer_twin(self) -> ModelConfig:
        """Return the baseline of matched widths and depth: every Mamba-2 layer becomes
        attention, with rotary positions and the full growing context."""
        return self.model_copy(
            update={
                "name": f"{self.name}-transformer",
                "pattern": self.pattern.replace("M", "*"),
                "rope": True,
                "attention_window": None,
            }
        )

    def with_window(self, attention_window: int | None) -> ModelConfig:
        return self.model_copy(update={"attention_window": attention_window})

    def state_bytes(self, tokens: int, dtype_bytes: int = 4, instruction_tokens: int = 0) -> dict[str, int]:
        """Return the per-session state after `tokens` tokens, in bytes.

        `ssm` and `conv` are the Mamba-2 layers' states, `kv` the attention layers' caches (bounded
        by the window). `pointer` is the pointer keys of one screenshot, counted as soon as any
        token is seen because a session's first step brings a screenshot. `copy` is the copy
        head's table over `instruction_tokens`. The SSM state is float32 whatever the model
        dtype, as Nemotron-H keeps it.
        """
        mamba_layers = self.pattern.count("M")
        attention_layers = self.pattern.count("*")
        kept = tokens if self.attention_window is None else min(tokens, self.attention_window)
        return {
            "ssm": mamba_layers * self.mamba_heads * self.mamba_head_dim * self.ssm_state_size * 4,
            "conv": mamba_layers * self.conv_dim * (self.conv_kernel - 1) * dtype_bytes,
            "kv": attention_layers * 2 * self.kv_heads * self.head_dim * kept * dtype_bytes,
            "pointer": (
                self.vision.image_tokens * POINTER_KEY_SIZE * dtype_bytes
                if self.pointer_subdivision is not None and tokens > 0 else 0
            ),
            # One key per instruction token and the token id it copies (8 bytes).
            "copy": instruction_tokens * (POINTER_KEY_SIZE * dtype_bytes + 8) if self.copy_instruction else 0,
        }


def _tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        pattern="M-*M-M*-",
        hidden_size=64,
        vocab_size=272,
        mamba_heads=4,
        mamba_head_dim=32,
        ssm_state_size=16,
        n_groups=2,
        chunk_size=16,
        attention_heads=4,
        kv_heads=2,
        head_dim=16,
        attention_window=64,
        mlp_hidden=128,
        vision=VisionConfig(
            image_height=64, image_width=64, patch_size=8, depth=1, width=48, heads=2, projector_hidden=96
        ),
        pointer_subdivision=2,
        copy_instruction=True,
        copy_case=True,
    )


def _practice() -> ModelConfig:
    # Portrait input, because the practice desktop's screen is MiniWoB++'s 160x210 task area.
    # NOTE: sized by arithmetic (about 6M language-model parameters, 80 image tokens per
    # screenshot), not yet by a measured two-hour training run on a 2-core CPU.
    return ModelConfig(
        name="practice",
        pattern="M-M-M*-M-M-M*-M-",
        hidden_size=256,
        vocab_size=272,
        mamba_heads=8,
        mamba_head_dim=64,
        ssm_state_size=64,
        n_groups=1,
        chunk_size=64,
        attention_heads=4,
        kv_heads=2,
        head_dim=64,
        attention_window=256,
        mlp_hidden=768,
        vision=VisionConfig(
            image_height=160, image_width=128, patch_size=8, depth=4, width=192, heads=3, projector_hidden=512
        ),
        # 4x4 sub-cells of a 16-pixel token: a 4-pixel grid at the input, about 5 screen pixels
        # on the practice desktop, finer than a MiniWoB++ checkbox.
        pointer_subdivision=4,
        copy_instruction=True,
        copy_case=True,
    )


def _small_bench() -> ModelConfig:
    # Wide enough that the Transformer twin's attention over a 64-step history (about 17k
    # tokens) dominates its cost, small enough that 64 steps run in minutes on a laptop CPU.
    return ModelConfig(
        name="small-bench",
        pattern="M-M-M-M*-M-M-M-M*-M-",
        hidden_size=640,
        vocab_size=272,
        mamba_heads=20,
        mamba_head_dim=64,
        ssm_state_size=128,
        n_groups=2,
        chunk_size=128,
        attention_heads=10,
        kv_heads=2,
        head_dim=64,
        attention_window=512,
        mlp_hidden=2560,
        vision=VisionConfig(
            image_height=512, image_width=512, patch_size=16, depth=2, width=256, heads=4, projector_hidden=1024
        ),
    )


def _nano_12b() -> ModelConfig:
    # Nemotron-Nano-12B-v2 language model and its RADIO ViT-H tile encoder (one 512x512 tile,
    # 256 tokens). The attention window is a Holdfast choice, not part of the published model.
    return ModelConfig(
        name="nano-12b",
        pattern="M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-",
        hidden_size=5120,
        vocab_size=131072,
        mamba_heads=128,
        mamba_head_dim=80,
        ssm_state_size=128,
        n_groups=8,
        chunk_size=128,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        attention_window=8192,
        mlp_hidden=20480,
        vision=VisionConfig(
            image_height=512,
            image_width=512,
            patch_size=16,
            depth=32,
            width=1280,
            heads=16,
            projector_hidden=20480,
            prefix_tokens=8,
            position_grid=128,
        ),
    )


_BASE_PRESETS = {
    "tiny": _tiny,
    "practice": _practice,
    "small-bench": _small_bench,
    "nano-12b": _nano_12b,
}


def preset_names() -> list[str]:
    names = []
    for name in _BASE_PRESETS:
        names += [name, f"{name}-transformer"]
    return names


def get_preset(name: str) -> ModelConfig:
    """Return a named preset; `<name>-transformer` is the preset's Transformer twin."""
    base, _, suffix = name.partition("-transformer")
    if suffix or base not in _BASE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    config = _BASE_PRESETS[base]()
    return config.transformer_twin() if name.endswith("-transformer") else config
