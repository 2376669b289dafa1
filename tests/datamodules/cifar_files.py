"""Tiny CIFAR-10 / CIFAR-100 folders in the official "python version" pickle format.

Shared by the image-source and ClassificationData tests: every file is written into a test's
``tmp_path``, a few images per batch, so reading them takes milliseconds and no network.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
#: The ten official CIFAR-10 class names (``batches.meta`` ``label_names``), in order.
CIFAR10_ALL_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]
FINE_NAMES = [b"apple", b"aquarium_fish", b"baby", b"bear"]
COARSE_NAMES = [b"fruit", b"fish", b"people"]
COARSE_OF_FINE = [0, 1, 2, 2]


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f)


def rows(n: int, start: int) -> np.ndarray:
    """``n`` rows of 3072 bytes; row ``i`` has ``start + i`` at R plane (0, 0) to tell rows apart
    and 200 at green, row 5, column 7 (byte 1024 + 5 * 32 + 7) to check the plane layout."""
    data = np.zeros((n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(start, start + n)
    data[:, 1024 + 5 * 32 + 7] = 200
    return data


def noisy_rows(n: int, start: int, seed: int) -> np.ndarray:
    """Like :func:`rows` (same R (0, 0) marker) but every other byte seeded noise, so no
    channel is constant and per-channel statistics can be computed."""
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(start, start + n)
    return data


def batch(data: np.ndarray, labels: list[int], key: bytes = b"labels") -> dict[bytes, Any]:
    return {
        b"batch_label": b"tiny batch",
        key: labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def write_cifar10(
    root: Path,
    per_batch: int = 2,
    n_test: int = 3,
    names: list[bytes] | None = None,
    noise_seed: int | None = None,
) -> Path:
    """``root/cifar-10-batches-py`` with 5 train batches of ``per_batch`` and a test batch.

    Train row ``j`` (over the 5 batches in order) has label ``j % k``, test row ``i`` label
    ``(i + 1) % k``, with ``k = len(names)`` (default: the first 5 CIFAR-10 names). With
    ``noise_seed``, pixels are seeded noise (:func:`noisy_rows`) instead of :func:`rows`.
    """
    names = CIFAR10_NAMES if names is None else names
    folder = root / "cifar-10-batches-py"
    k = len(names)

    def data(n: int, start: int) -> np.ndarray:
        return rows(n, start) if noise_seed is None else noisy_rows(n, start, noise_seed + start)

    for b in range(5):
        start = b * per_batch
        labels = [(start + i) % k for i in range(per_batch)]
        dump(folder / f"data_batch_{b + 1}", batch(data(per_batch, start), labels))
    dump(folder / "test_batch", batch(data(n_test, 100), [(i + 1) % k for i in range(n_test)]))
    dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
    )
    return folder


def cifar100_batch(data: np.ndarray, fine: list[int]) -> dict[bytes, Any]:
    out = batch(data, fine, b"fine_labels")
    out[b"coarse_labels"] = [COARSE_OF_FINE[f] for f in fine]
    return out


def write_cifar100(root: Path, n_train: int = 4, n_test: int = 3) -> Path:
    folder = root / "cifar-100-python"
    k = len(FINE_NAMES)
    dump(folder / "train", cifar100_batch(rows(n_train, 0), [i % k for i in range(n_train)]))
    dump(
        folder / "test", cifar100_batch(rows(n_test, 100), [(k - 1 - i) % k for i in range(n_test)])
    )
    dump(folder / "meta", {b"fine_label_names": FINE_NAMES, b"coarse_label_names": COARSE_NAMES})
    return folder
