"""The benchmarks' ``--device`` refuses devices the machine lacks, before any work starts."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks._device import parse_device

REPO = Path(__file__).resolve().parents[1]


def test_cpu_is_accepted() -> None:
    assert parse_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [("foo", "not a torch device"), ("mps", "cpu or cuda"), ("meta", "cpu or cuda")],
)
def test_unknown_or_unsupported_devices_are_refused(name: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error_not_a_crash() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no CUDA device here"):
        parse_device("cuda")
    # Through a script: argparse's usage error (exit 2) before any data is loaded.
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "alteraser_sweep.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "no CUDA device here" in out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_beyond_the_devices_is_refused() -> None:
    assert parse_device("cuda").type == "cuda"
    with pytest.raises(argparse.ArgumentTypeError, match="CUDA device"):
        parse_device(f"cuda:{torch.cuda.device_count()}")
