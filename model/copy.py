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

Some tasks ask for the instruction's text in another case ("type it in all upper case"). With
case modes, a copy also chooses to keep the byte, upper-case it or lower-case it (ASCII letters;
other bytes map to themselves), so the copied mass lands on the changed byte:

    copy part = sum over positions i and modes m of attention(i) * case(m) at token map_m(value_i)

The modes are flattened into the attention: entry m * n + i is position i copied in mode m, and
`sources` maps the table's token ids the same way, so the mixture above keeps its form.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import CASE_MODES, POINTER_KEY_SIZE


def case_maps(vocab_size: int) -> Tensor:
    """(3, V) token id maps for CASE_MODES over a byte vocabulary (ids 0-255 are bytes)."""
    ids = torch.arange(vocab_size)
    shift = ord("a") - ord("A")
    upper = torch.where((ids >= ord("a")) & (ids <= ord("z")), ids - shift, ids)
    lower = torch.where((ids >= ord("A")) & (ids <= ord("Z")), ids + shift, ids)
    return torch.stack([ids, upper, lower])


class CopyHead(nn.Module):
    def __init__(self, hidden_size: int, key_size: int = POINTER_KEY_SIZE, vocab_size: int | None = None) -> None:
        """`vocab_size` turns on the case modes (CASE_MODES); None copies bytes unchanged."""
        super().__init__()
        self.key_size = key_size
        self.query = nn.Linear(hidden_size, key_size, bias=False)
        self.key = nn.Linear(hidden_size, key_size, bias=False)
        self.gate = nn.Linear(hidden_size, 1)
        self.case: nn.Linear | None = None
        if vocab_size is not None:
            self.case = nn.Linear(hidden_size, len(CASE_MODES))
            self.register_buffer("case_maps", case_maps(vocab_size), persistent=False)

    def sources(self, values: Tensor) -> Tensor:
        """(..., n) token ids of the copy table -> (..., modes * n) ids each attention entry copies,
        one mode with case modes off."""
        if self.case is None:
            return values
        return self.case_maps[:, values].movedim(0, -2).flatten(-2)

    def keys(self, source_hidden: Tensor) -> Tensor:
        """(..., n, D) hidden states of the tokens before each copyable token -> (..., n, K)."""
        return self.key(source_hidden)

    def forward(self, hidden: Tensor, keys: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, D) states, (N, n, K) keys and an optional (N, n) validity mask ->
        (attention (N, modes * n) over the copyable tokens and case modes, gate (N,) weight of
        the vocabulary); pair the attention with `sources(values)`."""
        scores = torch.einsum("nk,nik->ni", self.query(hidden).float(), keys.float()) / math.sqrt(self.key_size)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attention = scores.softmax(-1)
        if self.case is not None:
            case = self.case(hidden).float().softmax(-1)  # (N, modes)
            attention = (case[:, :, None] * attention[:, None, :]).flatten(1)
        return attention, torch.sigmoid(self.gate(hidden).float()).squeeze(-1)


def mixed_distribution(logits: Tensor, attention: Tensor, gate: Tensor, values: Tensor) -> Tensor:
    """(N, V) logits, (N, m) copy attention, (N,) gate and (N, m) copied token ids -> (N, V) probabilities."""
    probabilities = gate[:, None] * logits.float().softmax(-1)
    return probabilities.scatter_add(1, values, (1 - gate[:, None]) * attention)
