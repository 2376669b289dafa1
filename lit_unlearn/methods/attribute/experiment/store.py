"""The table's output directory as it fills: one JSON line per (row, seed), resume, exports.

Layout of ``out``::

    rows.jsonl                      one line per finished (row, seed), Original included,
                                    appended as it finishes (ranking, audit, leakage audit,
                                    provenance, export path, fingerprint)
    original.ckpt                   the Original model, when the table trains it
    exports/attributes.csv          user_id, one column of class names per attribute, shadow
    exports/seed{S}/{row}.npz       user_ids (raw ids) and representations [n, d] of that run
    exports/seed{S}/{row}.json      the run's provenance (torch, threads, device, ...)
    privacy.csv, utility.csv, comparison.md, leakage*.csv, leakage.md   rendered at the end

**Resume.** Each line carries a *fingerprint*: a hash of everything that decides the numbers of
that (row, seed) apart from the seed: the stack config files (by content), the overrides, the
checkpoint (by content), the row's callback, data mode, epochs and overrides, and the leakage
settings. A restarted table skips every (row, seed) whose line has the current fingerprint and
reruns the rest; lines of an edited row or another checkpoint stay in the file, unused. The last
matching line of a (row, seed) wins. A line cut short by a kill is dropped (and cut from the file
before the next append). The exports of a run are written before its line, so a line's export is
complete.

The exports are what ``python -m lit_unlearn.attacks.leakage --representations
exports/seed0/AttrCloak-DF.npz --attributes exports/attributes.csv`` (or anyone else's
attacker) reads: see :mod:`lit_unlearn.attacks.export`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_unlearn.attacks.export import save_exported
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.methods.attribute.experiment.config import RowSpec, TableSpec
from lit_unlearn.reporting.jsonl import ROWS, JsonlStore
from lit_unlearn.reporting.plots import safe_stem

__all__ = [
    "ATTRIBUTES_CSV",
    "EXPORTS",
    "ROWS",
    "ResultStore",
    "export_representation",
    "export_stem",
    "fingerprint",
    "load_representation",
    "original_record",
    "row_record",
]

EXPORTS = "exports"
ATTRIBUTES_CSV = "attributes.csv"


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _table_record(spec: TableSpec, checkpoint: Path) -> dict[str, Any]:
    return {
        "stack": [_sha256(p) for p in (spec.trainer, spec.data, spec.model)],
        "overrides": list(spec.overrides),
        "checkpoint": _sha256(checkpoint),
        "leakage": dataclasses.asdict(spec.leakage),
    }


def original_record(spec: TableSpec, checkpoint: Path) -> dict[str, Any]:
    """What decides the Original's numbers of one seed: the stack, the checkpoint, the audit."""
    return {**_table_record(spec, checkpoint), "row": "Original"}


def row_record(spec: TableSpec, row: RowSpec, checkpoint: Path) -> dict[str, Any]:
    """What decides one row's numbers of one seed: the Original's record plus the row's build."""
    return {
        **_table_record(spec, checkpoint),
        "attributes": spec.attributes,
        "row": {
            "name": row.name,
            "mode": row.mode,
            "epochs": row.epochs,
            "callback": row.callback,
            "overrides": [*spec.mode_overrides.get(row.mode, ()), *row.overrides],
        },
    }


def fingerprint(record: Mapping[str, Any]) -> str:
    """A short hash of a JSON-able record (key order does not matter)."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultStore(JsonlStore):
    """``out/rows.jsonl``: append finished runs, find those a restart can skip.

    Args:
        out: The table's output directory.
    """

    def done(self) -> dict[tuple[str, int, str], dict[str, Any]]:
        """``(method, seed, fingerprint) -> record``, the last line of each winning."""
        return {(r["method"], int(r["seed"]), r.get("fingerprint", "")): r for r in self.records()}


def export_stem(method: str, seed: int) -> str:
    """``exports/seed{S}/{safe name}`` (no suffix), relative to ``out``."""
    return f"{EXPORTS}/seed{seed}/{safe_stem(method)}"


def export_representation(
    out: Path,
    method: str,
    seed: int,
    representation: torch.Tensor,
    data: RecommendationData,
    provenance: Mapping[str, Any],
) -> str:
    """Write one run's representation (raw user ids) and the shared attributes file.

    Returns:
        The ``.npz`` path relative to ``out``.
    """
    stem = export_stem(method, seed)
    attributes = data.user_attributes
    npz = out / f"{stem}.npz"
    tmp = npz.with_name(f".{npz.name}.tmp.npz")
    csv = out / EXPORTS / ATTRIBUTES_CSV
    csv_tmp = csv.with_name(f".{csv.name}.tmp")
    save_exported(
        tmp,
        csv_tmp,
        user_ids=list(data.index.user_ids),
        representations=representation.detach().cpu().float().numpy(),
        codes={n: attributes.codes[n].numpy() for n in attributes.names},
        classes={n: attributes.classes[n] for n in attributes.names},
        shadow=attributes.shadow.numpy(),
    )
    os.replace(tmp, npz)
    os.replace(csv_tmp, csv)
    meta = {"method": method, "seed": seed, "provenance": dict(provenance)}
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return f"{stem}.npz"


def load_representation(out: Path, export: str | None) -> torch.Tensor | None:
    """The representation a line's ``export`` names, or None when there is none (any more)."""
    if not export or not (out / export).is_file():
        return None
    with np.load(out / export, allow_pickle=False) as data:
        return torch.from_numpy(np.asarray(data["representations"], dtype=np.float32))
