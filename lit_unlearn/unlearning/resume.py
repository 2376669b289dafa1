"""Random state that a checkpoint carries, so a resumed fit draws what the uninterrupted one drew.

Lightning checkpoints weights, optimiser, loops and callback state, but not the global random
generators. Everything a fit draws from them after a checkpoint (a recommender's training
negatives, dropout masks, a noise schedule) then differs on resume, and the resumed model
drifts away from the uninterrupted one. :func:`collect_rng_state` captures torch's CPU and CUDA
generators, NumPy's and Python's as plain tensors and ints (loadable with
``torch.load(weights_only=True)``); :func:`restore_rng_state` puts them back.
:class:`~lit_unlearn.unlearning.contract.UnlearnableTask` saves one state per DDP rank in every
checkpoint and restores it when the resumed fit starts training.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNG_STATE_KEY", "collect_rng_state", "restore_rng_state"]

#: Key of the per-rank random states in a Lightning checkpoint.
RNG_STATE_KEY = "lit_unlearn_rng"


def collect_rng_state() -> dict[str, Any]:
    """This process's global random state: torch (CPU, every CUDA device), NumPy, Python.

    NumPy's and Python's states are converted to tensors and tuples of ints, so a checkpoint
    holding them still loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global random state captured by :func:`collect_rng_state`.

    CUDA states are restored only when as many devices are visible as were saved (a CPU
    checkpoint resumed on a GPU, or the reverse, keeps the current CUDA state).
    """
    torch.set_rng_state(state["torch"])
    cuda = state.get("torch.cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
