"""Depthwise causal conv1d with a carried state, as Mamba-2 applies it to x, B and C.

The state is the last (K - 1) inputs of each channel, K the kernel width, so a sequence can be
split anywhere and continued exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_conv_shapes(x: Tensor, weight: Tensor, state: Tensor | None) -> tuple[int, int, int]:
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, channels, length), got shape {tuple(x.shape)}")
    batch, channels, _ = x.shape
    if weight.dim() != 2 or weight.shape[0] != channels:
        raise ValueError(f"weight must be (channels={channels}, kernel), got {tuple(weight.shape)}")
    kernel = weight.shape[1]
    if state is not None and state.shape != (batch, channels, kernel - 1):
        raise ValueError(f"state must be {(batch, channels, kernel - 1)}, got {tuple(state.shape)}")
    return batch, channels, kernel


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None = None, activation: str | None = "silu"
) -> tuple[Tensor, Tensor]:
    """Convolve a whole sequence and return (y, final_state).

    Shapes: x (B, C, L), weight (C, K), bias (C,) or None, state (B, C, K-1) or None for zeros.
    Returns y (B, C, L) and the final state (B, C, K-1) in x's dtype.
    """
    batch, channels, kernel = _check_conv_shapes(x, weight, state)
    if state is None:
        state = x.new_zeros(batch, channels, kernel - 1)
    padded = torch.cat([state.to(x.dtype), x], dim=-1)  # (B, C, K-1+L)
    y = F.conv1d(padded, weight[:, None, :].to(x.dtype), bias, groups=channels)
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}; use 'silu' or None")
    return y, padded[:, :, padded.shape[-1] - (kernel - 1):]


def causal_conv1d_step(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor, activation: str | None = "silu"
) -> tuple[Tensor, Tensor]:
    """Convolve one token and return (y, new_state); the input state is not modified.

    Shapes: x (B, C), weight (C, K), bias (C,) or None, state (B, C, K-1).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (batch, channels) for one token, got shape {tuple(x.shape)}")
    _check_conv_shapes(x[..., None], weight, state)
    window = torch.cat([state, x[..., None]], dim=-1)  # (B, C, K)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}; use 'silu' or None")
    return y, window[:, :, 1:]
