"""The Holdfast vision-language model: a Nemotron-H style language model (Mamba-2, attention and
MLP blocks from a pattern string) fed with text tokens and image spans from the vision encoder.

Parameter names follow the Hugging Face layouts so checkpoints map one to one:
`backbone.embeddings`, `backbone.layers.{i}.norm`, `backbone.layers.{i}.mixer.*`,
`backbone.norm_f`, `lm_head` for the language model (Nemotron-H), `vision_model.*` and `mlp1.*`
for the image path (Nemotron-Nano-VL).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.attention import Attention, KVCache
from model.config import ModelConfig
from model.copy import CopyHead, mixed_distribution
from model.mamba2 import Mamba2Mixer, MambaState
from model.mlp import MLP
from model.norm import RMSNorm
from model.pointer import PointerHead
from model.vision import Projector, VisionEncoder, pixel_shuffle

LayerState = MambaState | KVCache | None


class ModelState:
    """Every layer's history for a batch of sessions: Mamba-2 conv and SSM states, attention
    key-value caches (bounded by the attention window), nothing for MLP layers."""

    def __init__(self, layers: list[LayerState], tokens_seen: int = 0) -> None:
        self.layers = layers
        self.tokens_seen = tokens_seen

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            if isinstance(layer, MambaState):
                return layer.ssm.shape[0]
            if isinstance(layer, KVCache):
                return layer.k.shape[0]
        return 0

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers if layer is not None)

    def checkpoint(self) -> tuple:
        marks = []
        for layer in self.layers:
            if isinstance(layer, MambaState):
                marks.append(layer.clone())
            elif isinstance(layer, KVCache):
                marks.append(layer.checkpoint())
            else:
                marks.append(None)
        return (self.tokens_seen, marks)

    def rollback(self, mark: tuple) -> None:
        self.tokens_seen, marks = mark
        for i, (layer, saved) in enumerate(zip(self.layers, marks)):
            if isinstance(layer, MambaState):
                self.layers[i] = saved.clone()
            elif isinstance(layer, KVCache):
                layer.rollback(saved)


class Block(nn.Module):
    """Pre-norm residual block with one mixer: Mamba-2, attention or MLP."""

    def __init__(self, config: ModelConfig, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        if kind == "mamba":
            self.mixer: nn.Module = Mamba2Mixer(config)
        elif kind == "attention":
            self.mixer = Attention(config)
        else:
            self.mixer = MLP(config.hidden_size, config.mlp_hidden)

    def forward(self, hidden: Tensor, state: LayerState) -> Tensor:
        mixed = self.norm(hidden)
        mixed = self.mixer(mixed) if self.kind == "mlp" else self.mixer(mixed, state)
        return hidden + mixed


class Backbone(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, kind) for kind in config.layer_kinds)
        self.norm_f = RMSNorm(config.hidden_size, eps=config.norm_eps)


class HoldfastModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        if config.vision is not None:
            vision = config.vision
            self.vision_model = VisionEncoder(vision)
            self.mlp1 = Projector(4 * vision.width, vision.projector_hidden, config.hidden_size)
        if config.pointer_subdivision is not None:
            self.point_head = PointerHead(config.hidden_size, config.pointer_subdivision)
        if config.copy_instruction:
            self.copy_head = CopyHead(config.hidden_size, vocab_size=config.vocab_size if config.copy_case else None)
        self._init_weights()

    def _init_weights(self) -> None:
        # Small normal initialisation for projections, as Nemotron-H (initializer_range 0.02);
        # the Mamba-specific parameters (A_log, D, dt_bias) keep their mixer initialisation.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def set_attention_window(self, attention_window: int | None) -> None:
        """Change how many past tokens each attention layer keeps (sessions made afterwards).

        The weights do not depend on the window, so a model trained with one window can run
        with another, e.g. shorter than the distance a task needs, to test what the Mamba-2
        state alone carries.
        """
        self.config = self.config.with_window(attention_window)
        for module in self.modules():
            if isinstance(module, (Attention, Mamba2Mixer)):
                module.config = self.config

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def num_parameters(self, part: str = "all") -> int:
        """Count parameters: `all`, `language` (backbone, lm_head, pointer and copy heads) or `vision`
        (encoder + projector)."""
        names = {
            "all": ("",),
            "language": ("backbone.", "lm_head.", "point_head.", "copy_head."),
            "vision": ("vision_model.", "mlp1."),
        }[part]
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(names))

    def new_state(self, batch_size: int = 1, dtype: torch.dtype | None = None) -> ModelState:
        dtype = dtype or self.dtype
        config = self.config
        layers: list[LayerState] = []
        for kind in config.layer_kinds:
            if kind == "mamba":
                layers.append(MambaState.zeros(config, batch_size, dtype, self.device))
            elif kind == "attention":
                layers.append(
                    KVCache(batch_size, config.kv_heads, config.head_dim, config.attention_window, dtype, self.device)
                )
            else:
                layers.append(None)
        return ModelState(layers)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        return self.backbone.embeddings(input_ids)

    def encode_images(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) normalised pixels -> (B, image_tokens, D) embeddings for the language model."""
        vision = self.config.vision
        if vision is None:
            raise ValueError(f"model {self.config.name!r} has no vision encoder; it reads text only")
        features = self.vision_model(pixels.to(self.dtype))
        features = pixel_shuffle(features, vision.grid_height, vision.grid_width)
        return self.mlp1(features)

    def hidden_states(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        state: ModelState | None = None,
    ) -> Tensor:
        """Return the final normalised hidden states (B, L, D), which the lm_head and the heads read.

        With a state, the sequence continues the history held there and updates the state.
        Without one, it is a whole sequence from the start, as in training.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds.to(self.dtype)
        if state is not None and state.batch_size not in (0, hidden.shape[0]):
            raise ValueError(f"input batch {hidden.shape[0]} does not match the state's batch {state.batch_size}")
        for i, block in enumerate(self.backbone.layers):
            hidden = block(hidden, state.layers[i] if state is not None else None)
        if state is not None:
            state.tokens_seen += hidden.shape[1]
        return self.backbone.norm_f(hidden)

    def forward(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        state: ModelState | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """Return logits (B, L, V), or (B, 1, V) with last_only; see `hidden_states`."""
        hidden = self.hidden_states(input_ids, inputs_embeds, state)
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm_head(hidden)

    def pointer_keys(self, image_hidden: Tensor) -> Tensor:
        """(N, T, D) final hidden states of a screenshot's image tokens -> (N, T, K) pointer keys."""
        if self.config.pointer_subdivision is None:
            raise ValueError(f"model {self.config.name!r} has no pointer head; it writes coordinates as text")
        return self.point_head.keys(image_hidden)

    def copy_keys(self, source_hidden: Tensor) -> Tensor:
        """(B, n, D) hidden states of the tokens before each copyable token -> (B, n, K) copy keys."""
        if not self.config.copy_instruction:
            raise ValueError(f"model {self.config.name!r} has no copy head")
        return self.copy_head.keys(source_hidden)

    def copy_probabilities(self, hidden: Tensor, logits: Tensor, keys: Tensor, values: Tensor,
                           mask: Tensor | None = None) -> Tensor:
        """(N, V) next-token probabilities mixing the lm_head's logits with copies from `values`."""
        attention, gate = self.copy_head(hidden, keys, mask)
        return mixed_distribution(logits, attention, gate, self.copy_head.sources(values))

    def point(self, query_hidden: Tensor, keys: Tensor) -> Tensor:
        """Pointer logits (N, image_tokens * subdivision^2) over `pointer_keys`; see model.pointer."""
        if self.config.pointer_subdivision is None:
            raise ValueError(f"model {self.config.name!r} has no pointer head; it writes coordinates as text")
        return self.point_head(query_hidden, keys)
