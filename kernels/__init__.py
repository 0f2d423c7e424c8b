"""Sequence kernels: chunked selective scan, one-token state update and causal conv1d.

The public functions pick an implementation per call: the CUDA kernels of `mamba_ssm` and
`causal_conv1d` when those packages are installed and the tensors are on a GPU, otherwise the
PyTorch code in this package, which runs everywhere and is the one the tests check.
"""

from __future__ import annotations

import importlib.util

from torch import Tensor

from kernels.conv1d import causal_conv1d, causal_conv1d_step
from kernels.ssd import ssd_chunked, ssd_reference, ssd_step

__all__ = [
    "causal_conv1d",
    "causal_conv1d_step",
    "selective_scan",
    "selective_state_update",
    "ssd_chunked",
    "ssd_reference",
    "ssd_step",
]

_HAVE_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Chunked scan over a sequence; same contract as `kernels.ssd.ssd_chunked`."""
    if _HAVE_MAMBA_SSM and x.is_cuda:
        # NOTE: this branch has not run in this project's CI (no GPU there); its agreement with
        # ssd_chunked is checked only when a GPU run of tests/kernels is made.
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        y, final_state = mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size, D=D, initial_states=initial_state, return_final_states=True
        )
        return y, final_state.float()
    return ssd_chunked(x, dt, A, B, C, chunk_size, D=D, initial_state=initial_state)


def selective_state_update(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One-token update; same contract as `kernels.ssd.ssd_step`."""
    return ssd_step(state, x, dt, A, B, C, D)
