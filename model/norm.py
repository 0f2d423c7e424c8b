"""RMSNorm and the grouped, gated RMSNorm of the Mamba-2 mixer (Nemotron-H numerics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise and scale in float32, cast back once: the order transformers' NemotronH uses.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * x32).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm of y * silu(z), computed separately over each of `groups` equal slices of the width."""

    def __init__(self, size: int, groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        if size % groups:
            raise ValueError(f"groups={groups} does not divide the normalised width {size}")
        self.weight = nn.Parameter(torch.ones(size))
        self.groups = groups
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        dtype = y.dtype
        y = y.float() * F.silu(z.float())
        grouped = y.unflatten(-1, (self.groups, -1))  # (..., G, width / G)
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * grouped.flatten(-2).to(dtype)
