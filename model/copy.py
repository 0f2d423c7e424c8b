"""The copy head: action tokens copied from the instruction, as in a pointer-generator network.

Typed text in a task ("Enter "Kasey" into the text field") is the instruction's own bytes. A
small model trained from scratch does not learn to recall them through its layers: the
practice models typed one name they had memorised, whatever the instruction asked. The copy
head lets every action token come either from the vocabulary or from a position of the
instruction. A gate mixes the two distributions:

    p(token) = gate * softmax(logits)[token] + (1 - gate) * sum of attention on positions holding token

Position i of the instruction is keyed by the hidden state of the token before it, which has
seen exactly the bytes up to i - 1. Copying the next byte of a string then means matching the
bytes typed so far against the bytes that precede each position. A session keeps one key per
instruction token, a bounded table next to the recurrent state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import POINTER_KEY_SIZE


class CopyHead(nn.Module):
    def __init__(self, hidden_size: int, key_size: int = POINTER_KEY_SIZE) -> None:
        super().__init__()
        self.key_size = key_size
        self.query = nn.Linear(hidden_size, key_size, bias=False)
        self.key = nn.Linear(hidden_size, key_size, bias=False)
        self.gate = nn.Linear(hidden_size, 1)

    def keys(self, source_hidden: Tensor) -> Tensor:
        """(..., n, D) hidden states of the tokens before each copyable token -> (..., n, K)."""
        return self.key(source_hidden)

    def forward(self, hidden: Tensor, keys: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, D) states, (N, n, K) keys and an optional (N, n) validity mask ->
        (attention (N, n) over the copyable tokens, gate (N,) weight of the vocabulary)."""
        scores = torch.einsum("nk,nik->ni", self.query(hidden).float(), keys.float()) / math.sqrt(self.key_size)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1), torch.sigmoid(self.gate(hidden).float()).squeeze(-1)


def mixed_distribution(logits: Tensor, attention: Tensor, gate: Tensor, values: Tensor) -> Tensor:
    """(N, V) logits, (N, n) copy attention, (N,) gate and (N, n) token ids -> (N, V) probabilities."""
    probabilities = gate[:, None] * logits.float().softmax(-1)
    return probabilities.scatter_add(1, values, (1 - gate[:, None]) * attention)
