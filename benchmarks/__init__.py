"""Benchmarks: each script compares lit_unlearn with a plain-PyTorch baseline in one run."""
