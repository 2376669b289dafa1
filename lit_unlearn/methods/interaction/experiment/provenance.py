"""What a timing was measured on: torch, threads, device, machine (no host name), command.

:func:`machine_text` and :func:`device_text` live in :mod:`lit_unlearn.reporting.provenance`
(which also records Python, git commit, host name and date for the attribute table).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

import torch

# Shared with the other runners (lit_unlearn.reporting.provenance); re-exported here so the
# old imports keep working.
from lit_unlearn.reporting.provenance import device_text, machine_text

__all__ = ["PROVENANCE", "command_line", "device_text", "environment", "machine_text"]

#: Columns every result row carries (string or int, never averaged).
PROVENANCE = ("torch", "threads", "device", "machine", "command")
_PROGRAM = "python -m lit_unlearn.methods.interaction.experiment"


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
