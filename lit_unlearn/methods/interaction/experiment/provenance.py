"""What a timing was measured on: torch, threads, device, machine (no host name), command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["PROVENANCE", "command_line", "device_text", "environment", "machine_text"]

#: Columns every result row carries (string or int, never averaged).
PROVENANCE = ("torch", "threads", "device", "machine", "command")
_PROGRAM = "python -m lit_unlearn.methods.interaction.experiment"


def machine_text() -> str:
    """CPU model, logical CPUs, OS and architecture; never the host name."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
                break
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}"


def device_text(device: torch.device | str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)`` with the accelerator's name."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def command_line(argv: Sequence[str] | None = None) -> str:
    """``python -m lit_unlearn.methods.interaction.experiment`` and its arguments ``argv``;
    None: this process's own command line (``run`` called from another program)."""
    if argv is None:
        return shlex.join(sys.argv)
    return f"{_PROGRAM} {shlex.join(argv)}".rstrip()


def environment(device: torch.device | str, command: str) -> dict[str, str | int]:
    """The :data:`PROVENANCE` fields of a row measured on ``device``."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_text(device),
        "machine": machine_text(),
        "command": command,
    }
