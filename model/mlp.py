"""The Nemotron-H MLP: up projection, squared ReLU, down projection, no gate and no bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def relu2(x: Tensor) -> Tensor:
    return torch.relu(x).square()


class MLP(nn.Module):
    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, mlp_hidden, bias=False)
        self.down_proj = nn.Linear(mlp_hidden, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(relu2(self.up_proj(x)))
