"""Holdfast models: the hybrid Mamba-2 + attention VLM, its Transformer twin, sessions and checkpoints."""
