"""Where a result was measured: torch, threads, device, Python, git commit, machine, kernels, date.

Shared by the experiment runners (the interaction runner's
:mod:`lit_unlearn.methods.interaction.experiment.provenance` builds on it). A number measured
with another torch build or thread count can differ in its last digits (CPU reductions sum in
another order), so every results file says what produced it (issue 23, deliverable 3).

:func:`provenance` gives the full record. torch is imported inside the functions, so importing
this module (like the rest of :mod:`lit_unlearn.reporting`) does not import torch.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROVENANCE_FIELDS",
    "device_text",
    "git_commit",
    "kernel_text",
    "machine_text",
    "provenance",
    "provenance_lines",
]

#: The keys of :func:`provenance`, in report order.
PROVENANCE_FIELDS: tuple[str, ...] = (
    "torch",
    "threads",
    "device",
    "python",
    "git_commit",
    "machine",
    "kernels",
    "date",
)
_REPO = Path(__file__).resolve().parents[2]


def machine_text() -> str:
    """CPU model, logical CPUs, OS and architecture (no host name: see :func:`provenance`)."""
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


def kernel_text() -> str:
    """The CPU kernels behind a result: ATen's vector ISA and MKL's reproducibility mode.

    Two machines with the same torch build can train different weights from the same seed:
    MKL picks its GEMM kernels per instruction set (AVX2 / AVX-512) and vendor, which sum in
    another order. ``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical reproducibility) makes
    it use one code path on every x86 CPU, at some speed (docs/attrcloak.md).
    """
    import torch

    mode = os.environ.get("MKL_CBWR", "unset")
    return f"{torch.backends.cpu.get_cpu_capability()}, MKL_CBWR={mode}"


def device_text(device: torch.device | str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)`` with the accelerator's name."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@functools.lru_cache(maxsize=4)
def git_commit(repo: str | Path = _REPO) -> str:
    """``HEAD``'s commit of ``repo`` (default: this package's checkout), ``-dirty`` appended when
    tracked files differ from it; ``unknown`` outside a git checkout or without git.

    Cached per process: a long run reports the commit it started from.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if status else head or "unknown"


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The :data:`PROVENANCE_FIELDS` of a result measured now, in this process, on ``device``.

    ``threads`` is ``torch.get_num_threads()`` (intra-op CPU threads), ``date`` the UTC time in
    ISO 8601 (seconds). No host name: results are committed and shared.
    """
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_text(device),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "machine": machine_text(),
        "kernels": kernel_text(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Markdown bullet lines: each field's distinct values over ``records`` (dates as a range).

    A table whose rows come from several machines, thread counts or commits says so here.
    """
    records = list(records)
    lines = []
    for key in PROVENANCE_FIELDS:
        values = [str(r[key]) for r in records if r.get(key) is not None]
        if not values:
            continue
        distinct = sorted(set(values))
        if key == "date" and len(distinct) > 1:
            text = f"{distinct[0]} to {distinct[-1]}"
        else:
            text = "; ".join(f"`{v}`" if key == "git_commit" else v for v in distinct)
        lines.append(f"- {key}: {text}")
    return lines
