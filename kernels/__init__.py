"""Sequence kernels: chunked selective scan, one-token state update and causal conv1d."""
