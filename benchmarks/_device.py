"""``--device`` for the benchmarks: refuse a device this machine lacks before any work starts."""

from __future__ import annotations

import argparse

import torch


def parse_device(name: str) -> torch.device:
    """An ``argparse`` type: the device, or a clear usage error.

    Raises:
        argparse.ArgumentTypeError: ``name`` is not a torch device, or names CUDA where this
            torch build or machine has none (torch's own error surfaces only at the first
            tensor moved, as "Torch not compiled with CUDA enabled", after data loading).
    """
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"not a torch device: {name!r} ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none (CPU-only build)"
            raise argparse.ArgumentTypeError(
                f"--device {name}: no CUDA device here (torch {torch.__version__}, CUDA {build})"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"--device {name}: the benchmarks run on cpu or cuda")
    return device
