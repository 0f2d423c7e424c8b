"""Offline replay evaluation, live evaluation and throughput benchmarks."""
