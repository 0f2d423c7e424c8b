"""Mamba-2 selective scan: the chunked whole-sequence form (state space duality), the one-token
state update, and a sequential reference that both are tested against.

Notation follows the Mamba-2 paper: B batch, L length, H heads, P head dim, G groups, N state size.
The recurrence every function computes, per head:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        (h: P x N)
    y_t = h_t C_t + D * x_t

`dt` arrives already discretised (softplus and bias applied by the mixer), so the kernels only see
the recurrence. Heads are split evenly over groups: head i reads B and C of group i // (H / G).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_scan_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[int, ...]:
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, length, heads, head_dim), got shape {tuple(x.shape)}")
    batch, length, heads, head_dim = x.shape
    if dt.shape != (batch, length, heads):
        raise ValueError(f"dt must be {(batch, length, heads)} to match x, got {tuple(dt.shape)}")
    if A.shape != (heads,):
        raise ValueError(f"A must be ({heads},), one value per head, got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (batch, length) or B.shape != C.shape:
        raise ValueError(
            f"B and C must both be (batch={batch}, length={length}, groups, state), "
            f"got B {tuple(B.shape)} and C {tuple(C.shape)}"
        )
    groups, state_size = B.shape[2], B.shape[3]
    if heads % groups:
        raise ValueError(f"heads ({heads}) must be a multiple of groups ({groups})")
    return batch, length, heads, head_dim, groups, state_size


@lru_cache(maxsize=8)
def _tril_masks(length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Return the strictly lower and the lower triangular boolean masks of size (L, L)."""
    ones = torch.ones(length, length, dtype=torch.bool, device=device)
    return torch.tril(ones, -1), torch.tril(ones, 0)


def _segment_sum(x: Tensor) -> Tensor:
    """Return S with S[..., i, j] = sum(x[..., j+1 : i+1]) for j <= i and -inf above the diagonal.

    exp(S) is the decay from position j to position i inside one chunk. Summing a masked copy
    (instead of subtracting two cumulative sums) keeps it exact for long chunks.
    """
    length = x.shape[-1]
    strictly_lower, lower = _tril_masks(length, x.device)
    x = x[..., None].expand(*x.shape, length)  # (..., L, L): x[..., k, j] = x_k
    x = x.masked_fill(~strictly_lower, 0)
    segsum = torch.cumsum(x, dim=-2)
    return segsum.masked_fill(~lower, float("-inf"))


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the selective scan over a whole sequence in chunks and return (y, final_state).

    Shapes: x (B, L, H, P), dt (B, L, H), A (H,), B and C (B, L, G, N), D (H,) or None,
    initial_state (B, H, P, N) or None for zeros. Returns y (B, L, H, P) in x's dtype and
    final_state (B, H, P, N) in float32, which continues the sequence exactly.

    Inside a chunk the scan is a masked matrix product (quadratic in chunk_size); across chunks
    only the (H, P, N) states are passed on, so the cost is linear in L.
    """
    batch, length, heads, head_dim, _, state_size = _check_scan_shapes(x, dt, A, B, C)
    if initial_state is not None and initial_state.shape != (batch, heads, head_dim, state_size):
        raise ValueError(
            f"initial_state must be {(batch, heads, head_dim, state_size)}, got {tuple(initial_state.shape)}"
        )
    # The chunk size changes only how the work is grouped, not the result, so a sequence shorter
    # than one chunk runs as a single chunk of its own length instead of being padded.
    chunk_size = max(1, min(chunk_size, length))
    tail = length % chunk_size
    if tail and length > chunk_size:
        # Run the whole chunks, then the tail as one short chunk that continues from their final
        # state: exact, and cheaper than padding the tail to a full chunk.
        whole = length - tail
        y_head, state = ssd_chunked(
            x[:, :whole], dt[:, :whole], A, B[:, :whole], C[:, :whole], chunk_size, D, initial_state
        )
        y_tail, state = ssd_chunked(x[:, whole:], dt[:, whole:], A, B[:, whole:], C[:, whole:], tail, D, state)
        return torch.cat([y_head, y_tail], dim=1), state

    out_dtype = x.dtype
    x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    A = A.float()

    # Zero-padding the tail is exact: dt = 0 means no decay and no input, so padded steps leave
    # the state untouched and their outputs are cut off below.
    pad = (-length) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    chunks = x.shape[1] // chunk_size
    groups = B.shape[2]
    per_group = heads // groups
    # Heads are split as (G, R): head g * R + r reads group g, so C B^T is computed once per
    # group instead of once per head.
    x_dt = (x * dt[..., None]).view(batch, chunks, chunk_size, groups, per_group, head_dim)  # (B, c, Q, G, R, P)
    B = B.view(batch, chunks, chunk_size, groups, state_size)  # (B, c, Q, G, N)
    C = C.view(batch, chunks, chunk_size, groups, state_size)
    a_dt = (dt * A).view(batch, chunks, chunk_size, groups, per_group).permute(0, 3, 4, 1, 2)  # (B, G, R, c, Q)
    a_cumsum = torch.cumsum(a_dt, dim=-1)

    # 1. Outputs from inputs in the same chunk: y = (C B^T * decay) x_dt.
    decay_within = torch.exp(_segment_sum(a_dt))  # (B, G, R, c, Q, Q)
    scores = torch.einsum("bclgn,bcsgn->bgcls", C, B)[:, :, None] * decay_within
    y = torch.einsum("bgrcls,bcsgrp->bclgrp", scores, x_dt)

    # 2. Each chunk's own contribution to the state at its end.
    decay_to_end = torch.exp(a_cumsum[..., -1:] - a_cumsum)  # (B, G, R, c, Q)
    chunk_states = torch.einsum("bclgn,bgrcl,bclgrp->bcgrpn", B, decay_to_end, x_dt)

    # 3. Pass states across chunk boundaries (a scan over chunks, quadratic only in their count).
    if initial_state is None:
        initial_state = x.new_zeros(batch, heads, head_dim, state_size)
    initial = initial_state.float().view(batch, 1, groups, per_group, head_dim, state_size)
    chunk_states = torch.cat([initial, chunk_states], dim=1)  # (B, c+1, G, R, P, N)
    decay_chunks = torch.exp(_segment_sum(F.pad(a_cumsum[..., -1], (1, 0))))  # (B, G, R, c+1, c+1)
    states = torch.einsum("bgrzc,bcgrpn->bzgrpn", decay_chunks, chunk_states)
    states_in, final_state = states[:, :-1], states[:, -1].reshape(batch, heads, head_dim, state_size)

    # 4. Outputs from the state each chunk starts with.
    decay_from_start = torch.exp(a_cumsum)  # (B, G, R, c, Q)
    y = y + torch.einsum("bclgn,bcgrpn,bgrcl->bclgrp", C, states_in, decay_from_start)

    y = y.reshape(batch, chunks * chunk_size, heads, head_dim)[:, :length]
    if D is not None:
        y = y + x[:, :length] * D.float()[:, None]
    return y.to(out_dtype), final_state


def ssd_step(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Advance the scan by one token and return (y, new_state); the input state is not modified.

    Shapes: state (B, H, P, N) float32, x (B, H, P), dt (B, H), A (H,), B and C (B, G, N),
    D (H,) or None. Returns y (B, H, P) in x's dtype and the new state (B, H, P, N) float32.
    """
    if x.dim() != 3 or state.dim() != 4 or state.shape[:3] != x.shape:
        raise ValueError(
            f"x must be (batch, heads, head_dim) and state (batch, heads, head_dim, state); "
            f"got x {tuple(x.shape)}, state {tuple(state.shape)}"
        )
    heads = x.shape[1]
    if dt.shape != x.shape[:2] or B.shape != C.shape or B.shape[-1] != state.shape[-1]:
        raise ValueError(
            f"dt must be {tuple(x.shape[:2])} and B, C (batch, groups, {state.shape[-1]}); "
            f"got dt {tuple(dt.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    out_dtype = x.dtype
    batch, heads, head_dim = x.shape
    groups, state_size = B.shape[1], B.shape[2]
    if heads % groups:
        raise ValueError(f"heads ({heads}) must be a multiple of groups ({groups})")
    per_group = heads // groups
    x, dt = x.float(), dt.float()
    decay = torch.exp(dt * A.float())  # (B, H)
    x_dt = (x * dt[..., None]).view(batch, groups, per_group, head_dim, 1)
    grouped_state = state.view(batch, groups, per_group, head_dim, state_size)
    new_state = grouped_state * decay.view(batch, groups, per_group, 1, 1) + x_dt * B.float()[:, :, None, None, :]
    y = torch.einsum("bgrpn,bgn->bgrp", new_state, C.float()).reshape(batch, heads, head_dim)
    if D is not None:
        y = y + x * D.float()[:, None]
    return y.to(out_dtype), new_state.view(batch, heads, head_dim, state_size)


def ssd_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the recurrence one token at a time: slow, obviously correct, the oracle for tests."""
    batch, length, heads, head_dim, _, state_size = _check_scan_shapes(x, dt, A, B, C)
    state = (
        x.new_zeros(batch, heads, head_dim, state_size, dtype=torch.float32)
        if initial_state is None
        else initial_state.float()
    )
    outputs = []
    for t in range(length):
        y, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        outputs.append(y)
    y = torch.stack(outputs, dim=1) if outputs else x.new_zeros(x.shape)
    return y, state
