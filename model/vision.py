"""The vision encoder: a ViT over patches, pixel shuffle, and the `mlp1` projector.

One screenshot becomes a span of (grid_h / 2) * (grid_w / 2) language-model tokens. Parameter
names follow RADIO's ViT (`blocks.N.attn.qkv`, `mlp.fc1`...) and Nemotron-Nano-VL's projector
(`mlp1.0` RMSNorm, `mlp1.1` Linear, squared ReLU, `mlp1.3` Linear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from model.config import VisionConfig
from model.mlp import relu2
from model.norm import RMSNorm


def image_to_tensor(image: Image.Image, config: VisionConfig) -> Tensor:
    """Resize a screenshot into the encoder's input (3, H, W), keeping the aspect ratio.

    The image is scaled to fit and padded with black at the right and bottom, so normalised
    screen coordinates keep a fixed relation to the model's pixels. Pixels are then
    CLIP-normalised.
    """
    target_w, target_h = config.image_width, config.image_height
    scale = min(target_w / image.width, target_h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.BILINEAR)
    canvas = Image.new("RGB", (target_w, target_h))
    canvas.paste(resized, (0, 0))
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(target_h, target_w, 3).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(config.norm_mean)[:, None, None]
    std = torch.tensor(config.norm_std)[:, None, None]
    return (pixels - mean) / std


def pixel_shuffle(x: Tensor, grid_h: int, grid_w: int) -> Tensor:
    """Fold each 2x2 neighbourhood of patch features into one token: (B, h*w, C) -> (B, h*w/4, 4C).

    Column pairs are folded first, then row pairs, and the result is read row-major: the order
    of InternVL's "v2" pixel shuffle, so a checkpoint's projector gets features in its trained order.
    """
    batch, _, channels = x.shape
    x = x.reshape(batch, grid_h, grid_w // 2, channels * 2)  # fold column pairs
    x = x.transpose(1, 2)  # (B, w/2, h, 2C)
    x = x.reshape(batch, grid_w // 2, grid_h // 2, channels * 4)  # fold row pairs
    x = x.transpose(1, 2)  # (B, h/2, w/2, 4C)
    return x.reshape(batch, -1, channels * 4)


class ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class ViTMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = ViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = ViTMLP(width, int(width * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    """Patches -> ViT features (prefix tokens dropped), one row per patch."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        patch_pixels = 3 * config.patch_size**2
        self.embedder = nn.Linear(patch_pixels, config.width, bias=False)
        positions = config.position_grid**2 if config.position_grid else config.grid_height * config.grid_width
        self.pos_embed = nn.Parameter(torch.randn(1, positions, config.width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(config.prefix_tokens, config.width) * 0.02) if config.prefix_tokens else None
        self.blocks = nn.ModuleList(ViTBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth))

    def _positions(self) -> Tensor:
        """Position embeddings for the input's patch grid, interpolated from a larger stored table."""
        config = self.config
        if not config.position_grid:
            return self.pos_embed
        side = config.position_grid
        table = self.pos_embed.view(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, side, side)
        table = F.interpolate(table, size=(config.grid_height, config.grid_width), mode="bilinear", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, config.grid_height * config.grid_width, -1)

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) normalised pixels -> (B, grid_h * grid_w, width)."""
        patch = self.config.patch_size
        batch = pixels.shape[0]
        patches = pixels.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, 3, gh, gw, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(batch, -1, 3 * patch * patch)
        x = self.embedder(patches) + self._positions()
        prefix = 0
        if self.cls_token is not None:
            prefix = self.cls_token.shape[0]
            x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, prefix:]


class Projector(nn.Sequential):
    """mlp1: RMSNorm over the shuffled features, Linear, squared ReLU, Linear into the model width."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__(
            RMSNorm(in_features, eps=1e-5),
            nn.Linear(in_features, hidden, bias=False),
            _ReLU2(),
            nn.Linear(hidden, out_features, bias=False),
        )


class _ReLU2(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return relu2(x)
