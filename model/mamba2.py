"""The Mamba-2 mixer in the Nemotron-H layout (parameter names match transformers' NemotronH).

in_proj splits into z (gate, d_inner), xBC (d_inner + 2 G N) and dt (H). A depthwise causal
conv1d with SiLU runs over xBC. The selective scan turns x, dt, B and C into y, and the output
is out_proj(GatedRMSNorm(y, z)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels import causal_conv1d, causal_conv1d_step, selective_scan, selective_state_update
from model.config import ModelConfig
from model.norm import GatedRMSNorm


@dataclass
class MambaState:
    """One Mamba-2 layer's recurrent state: fixed size, whatever the history length."""

    conv: Tensor  # (B, conv_dim, K-1): the last K-1 inputs of the causal conv
    ssm: Tensor  # (B, H, P, N) float32

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, dtype: torch.dtype, device: torch.device | str) -> MambaState:
        return cls(
            conv=torch.zeros(batch, config.conv_dim, config.conv_kernel - 1, dtype=dtype, device=device),
            ssm=torch.zeros(
                batch, config.mamba_heads, config.mamba_head_dim, config.ssm_state_size,
                dtype=torch.float32, device=device,
            ),
        )

    def nbytes(self) -> int:
        return self.conv.nbytes + self.ssm.nbytes

    def tensors(self) -> dict[str, Tensor]:
        return {"conv": self.conv, "ssm": self.ssm}

    def clone(self) -> MambaState:
        return MambaState(self.conv.clone(), self.ssm.clone())


class Mamba2Mixer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        heads, d_inner = config.mamba_heads, config.d_inner
        self.in_proj = nn.Linear(config.hidden_size, d_inner + config.conv_dim + heads, bias=False)
        self.conv1d = nn.Conv1d(
            config.conv_dim, config.conv_dim, config.conv_kernel, groups=config.conv_dim,
            padding=config.conv_kernel - 1, bias=True,
        )
        # Mamba-2's initialisation: time steps log-uniform in [1e-3, 1e-1] (dt_bias is their
        # inverse softplus) and A uniform in [1, 16], so that at initialisation some heads
        # forget within a few tokens and others keep information for hundreds.
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(heads))
        self.norm = GatedRMSNorm(d_inner, config.n_groups, eps=config.norm_eps)
        self.out_proj = nn.Linear(d_inner, config.hidden_size, bias=False)

    def forward(self, hidden: Tensor, state: MambaState | None = None) -> Tensor:
        """Mix a (B, L, D) sequence; with a state, continue from it and update it in place."""
        config = self.config
        batch, length, _ = hidden.shape
        heads, head_dim, groups, state_size = (
            config.mamba_heads, config.mamba_head_dim, config.n_groups, config.ssm_state_size,
        )
        z, xbc, dt = self.in_proj(hidden).split([config.d_inner, config.conv_dim, heads], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(min=config.time_step_min)  # (B, L, H)
        A = -torch.exp(self.A_log.float())
        conv_weight = self.conv1d.weight[:, 0, :]  # (conv_dim, K)

        if state is not None and length == 1:
            xbc, state.conv = causal_conv1d_step(xbc[:, 0], conv_weight, self.conv1d.bias, state.conv)
            x, B, C = xbc.split([config.d_inner, groups * state_size, groups * state_size], dim=-1)
            y, state.ssm = selective_state_update(
                state.ssm,
                x.view(batch, heads, head_dim),
                dt[:, 0],
                A,
                B.view(batch, groups, state_size),
                C.view(batch, groups, state_size),
                self.D,
            )
            y = y.reshape(batch, 1, config.d_inner)
        else:
            conv_state = state.conv if state is not None else None
            xbc, final_conv = causal_conv1d(xbc.transpose(1, 2), conv_weight, self.conv1d.bias, conv_state)
            x, B, C = xbc.transpose(1, 2).split(
                [config.d_inner, groups * state_size, groups * state_size], dim=-1
            )
            y, final_ssm = selective_scan(
                x.reshape(batch, length, heads, head_dim),
                dt,
                A,
                B.reshape(batch, length, groups, state_size),
                C.reshape(batch, length, groups, state_size),
                config.chunk_size,
                D=self.D,
                initial_state=state.ssm if state is not None else None,
            )
            y = y.reshape(batch, length, config.d_inner)
            if state is not None:
                state.conv, state.ssm = final_conv, final_ssm

        return self.out_proj(self.norm(y, z))
