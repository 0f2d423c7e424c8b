"""Grouped-query attention with a key-value cache that can be bounded to a sliding window.

Window semantics: with `attention_window = W`, a token attends to itself and to the W tokens
before it, and the cache keeps exactly the last W tokens, so a bounded cache stops growing once
W tokens have been seen. A whole-sequence pass applies the same band mask, so prefill,
token-by-token decoding and any split in between compute the same function.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig


class KVCache:
    """Keys and values of one attention layer, for a batch of sessions that advance together.

    Tokens live in a buffer [start, end), and the capacity grows geometrically. A windowed cache
    moves its tokens to the front when it runs out of room, so appends cost amortised O(1)
    copies per token.
    """

    def __init__(
        self, batch: int, kv_heads: int, head_dim: int, window: int | None,
        dtype: torch.dtype, device: torch.device | str, capacity: int = 256,
    ) -> None:
        if window is not None:
            capacity = max(capacity, 2 * window)
        self.window = window
        self.k = torch.empty(batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.start = 0
        self.end = 0
        self.seen = 0  # tokens ever appended: the absolute position of the next token

    @property
    def length(self) -> int:
        return self.end - self.start

    def nbytes(self) -> int:
        """Bytes of the tokens held (not of the spare capacity)."""
        per_token = self.k[:, :, :1].nbytes + self.v[:, :, :1].nbytes
        return per_token * self.length

    def _reserve(self, extra: int) -> None:
        capacity = self.k.shape[2]
        if self.end + extra <= capacity:
            return
        kept = self.length
        if kept + extra > capacity:
            capacity = max(2 * capacity, kept + extra)
        k = self.k.new_empty(*self.k.shape[:2], capacity, self.k.shape[3])
        v = torch.empty_like(k)
        k[:, :, :kept] = self.k[:, :, self.start:self.end]
        v[:, :, :kept] = self.v[:, :, self.start:self.end]
        self.k, self.v = k, v
        self.start, self.end = 0, kept

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, int]:
        """Append (B, Hkv, L, Dh) keys and values and return (keys, values, first_key_position):
        every key the new queries may need, i.e. the kept history followed by the new tokens."""
        new = k.shape[2]
        self._reserve(new)
        self.k[:, :, self.end:self.end + new] = k
        self.v[:, :, self.end:self.end + new] = v
        self.end += new
        first_position = self.seen + new - self.length
        keys, values = self.k[:, :, self.start:self.end], self.v[:, :, self.start:self.end]
        self.seen += new
        if self.window is not None and self.length > self.window:
            self.start = self.end - self.window
        return keys, values, first_position

    def tensors(self) -> dict[str, Tensor]:
        return {"k": self.k[:, :, self.start:self.end], "v": self.v[:, :, self.start:self.end]}

    def load(self, k: Tensor, v: Tensor, seen: int) -> None:
        """Replace the contents (restore from a snapshot)."""
        self.start = self.end = 0
        self.seen = seen - k.shape[2]
        self.append(k, v)

    def checkpoint(self) -> tuple:
        # An unbounded cache never drops tokens, so its indices are enough to roll back. A
        # windowed cache may evict or compact, so it keeps a copy of its tokens (at most W).
        if self.window is None:
            return (self.start, self.end, self.seen, None)
        held = self.tensors()
        return (self.start, self.end, self.seen, (held["k"].clone(), held["v"].clone()))

    def rollback(self, mark: tuple) -> None:
        start, end, seen, copy = mark
        if copy is None:
            self.start, self.end, self.seen = start, end, seen
        else:
            self.load(copy[0], copy[1], seen)

    def select(self, rows: list[int]) -> KVCache:
        """Return a new cache with the given batch rows (to split or regroup sessions)."""
        held = self.tensors()
        out = KVCache(len(rows), self.k.shape[1], self.k.shape[3], self.window, self.k.dtype, self.k.device)
        out.load(held["k"][rows].clone(), held["v"][rows].clone(), self.seen)
        return out


@lru_cache(maxsize=16)
def rotary_tables(first: int, length: int, head_dim: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Return cos and sin tables (L, head_dim) for positions first .. first + length - 1.

    Cached because every attention layer of one forward pass uses the same tables.
    """
    positions = torch.arange(first, first + length, dtype=torch.float32, device=device)
    inverse_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = positions[:, None] * inverse_freq[None, :]  # (L, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, L, Dh) queries or keys by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos.to(x.dtype) + rotated * sin.to(x.dtype))


@lru_cache(maxsize=16)
def attention_mask(first_query: int, queries: int, first_key: int, keys: int, window: int | None, device: torch.device) -> Tensor:
    """Return a boolean (Lq, Lk) mask, True where a query may attend: causal, and within the window.

    Positions are absolute. The result is cached because every attention layer of one forward
    pass builds the same mask.
    """
    query_positions = torch.arange(first_query, first_query + queries, device=device)
    key_positions = torch.arange(first_key, first_key + keys, device=device)
    allowed = key_positions[None, :] <= query_positions[:, None]
    if window is not None:
        allowed &= key_positions[None, :] >= query_positions[:, None] - window
    return allowed


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        q_size = config.attention_heads * config.head_dim
        kv_size = config.kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=False)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(self, hidden: Tensor, cache: KVCache | None = None) -> Tensor:
        """Attend over a (B, L, D) sequence; with a cache, continue from it and update it."""
        config = self.config
        batch, length, _ = hidden.shape
        q = self.q_proj(hidden).view(batch, length, config.attention_heads, config.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, length, config.kv_heads, config.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, length, config.kv_heads, config.head_dim).transpose(1, 2)

        first_query = cache.seen if cache is not None else 0
        if config.rope:
            cos, sin = rotary_tables(first_query, length, config.head_dim, config.rope_theta, hidden.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        if cache is not None:
            k, v, first_key = cache.append(k, v)
        else:
            first_key = 0

        # A single query that may see every key needs no mask, which keeps decoding on SDPA's
        # fastest path; everything else gets the explicit causal band.
        if length == 1 and (config.attention_window is None or k.shape[2] <= config.attention_window + 1):
            mask = None
        else:
            mask = attention_mask(first_query, length, first_key, k.shape[2], config.attention_window, hidden.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=config.kv_heads != config.attention_heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
