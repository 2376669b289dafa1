"""Re-audit a table's exported representations over several draws of the outside attacker.

Every cell's number ``BAcc`` is one draw of FedAU2's outside adversary: an MLP (one hidden
layer of 100) trained on 88 shadow users, early-stopped on 21, seeded 0 in every cell. On
ML-100K two draws of that attacker on the *same* representation differ by up to 0.1 balanced
accuracy (the validation users and the initialisation change), more than the figures' margins.
This module re-runs the same attacker on the cells' exports (``exports/<cell>.npz``, raw user
ids) with ``draws`` seeds (seed ``k`` draws the validation users and the initialisation; draw 0
is the table's own attacker) on the table's shadow split, and reports per row the table's draw
beside the mean over draws, so a figure reached or missed by one lucky or unlucky draw shows.

It reads only the exports, as an outside auditor would: the shadow split comes from the export
(``shadow``, written since this module) or, for older exports, from the cell's data config.
FedRAP's table number is its per-column ensemble over the residual tables, which the export
does not hold: its rows here are the MLP on the exported representation, another attacker.

:func:`reaudit_leakage` runs issue 23's audit from both sides on the same exports
(:func:`lit_unlearn.attacks.leakage.audit_leakage`: flip-aware AUC leakage of a logistic
regression, an MLP, XGBoost and kNN, under the shadow split and 5-fold cross-validation over all
users, each against a label-permutation null), so a method that *inverts* the attribute (below
chance, recoverable by flipping) shows, which balanced accuracy alone hides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lit_unlearn.attacks.audit import attack_attribute
from lit_unlearn.attacks.leakage import DEFAULT_ATTACKERS, PROTOCOLS, audit_leakage
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.methods.federated.experiment.spec import FederatedTableError, TableSpec
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.runs import cli_run_objects

__all__ = ["reaudit", "reaudit_export", "reaudit_leakage"]


def _shadow_from_config(config: Path, extra: Sequence[str], user_ids: np.ndarray) -> np.ndarray:
    """The shadow users of the cell's data (for an export written without ``shadow``).

    Args:
        config: The cell's ``lit-unlearn fit`` config.
        extra: The table's command-line overrides of the cell's backbone.
        user_ids: The export's raw user ids.

    Raises:
        FederatedTableError: The config's users are not the export's.
    """
    from lit_unlearn.datamodules.federated import FederatedData
    from lit_unlearn.methods.federated.task import FederatedTask

    # Built as the cell's fit built it (the table's overrides may change the data).
    _, dm, _ = cli_run_objects([str(config)], extra, FederatedTask, FederatedData)
    dm.prepare_data()
    dm.setup("fit")
    ids = np.asarray(dm.index.user_ids, dtype=str)
    if ids.shape != user_ids.shape or not np.array_equal(ids, user_ids):
        raise FederatedTableError(
            f"the export's users are not those of {config}'s data: it belongs to another run"
        )
    return np.asarray(dm.user_attributes.shadow.cpu().numpy(), dtype=bool)


def reaudit_export(
    path: str | Path,
    attributes: Sequence[str],
    draws: int = 5,
    hidden: int = 100,
    shadow: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The outside attacker's draws on one export.

    Args:
        path: An ``.npz`` export (``representation``, ``user_id``, ``attr_<name>``,
            ``classes_<name>``, and ``shadow`` unless given).
        attributes: Attributes to attack.
        draws: Attacker seeds ``0 .. draws - 1`` (0: the table's attacker).
        hidden: The attacker's hidden width (the table's: 100).
        shadow: The users whose attributes the attacker knows (default the export's).

    Returns:
        One row per (attribute, draw): ``attribute``, ``draw``, ``balanced_accuracy``,
        ``macro_f1``, ``chance``.

    Raises:
        FederatedTableError: ``draws < 1``, or the export lacks a key it needs.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise FederatedTableError(f"draws must be an int >= 1, got {draws!r}")
    with np.load(path) as data:
        keys = set(data.files)
        needed = {"representation"} | {f"attr_{a}" for a in attributes}
        if shadow is None:
            needed.add("shadow")
        missing = sorted(needed - keys)
        if missing:
            raise FederatedTableError(f"{path} has no {missing}")
        z = torch.as_tensor(data["representation"], dtype=torch.float32)
        codes = {a: torch.as_tensor(data[f"attr_{a}"]) for a in attributes}
        classes = {a: len(data[f"classes_{a}"]) for a in attributes}
        mask = torch.as_tensor(shadow if shadow is not None else data["shadow"], dtype=torch.bool)
    rows = []
    for attribute in attributes:
        for draw in range(draws):
            # The same call as EmbeddingAttack's (audit_embeddings with seed = draw).
            result = attack_attribute(
                MLPAttacker(hidden=hidden, layers=2, seed=draw),
                z,
                codes[attribute],
                mask,
                classes[attribute],
                attribute=attribute,
                seed=draw,
            )
            rows.append(
                {
                    "attribute": attribute,
                    "draw": draw,
                    "balanced_accuracy": result.balanced_accuracy,
                    "macro_f1": result.macro_f1,
                    "chance": result.chance,
                }
            )
    return rows


def reaudit(
    spec: TableSpec,
    records: Sequence[Mapping[str, Any]],
    draws: int = 5,
    current: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Re-audit every recorded cell's export; write ``reaudit.csv`` and ``reaudit.md``.

    Args:
        spec: The table.
        records: The cells to re-audit (``runner.recorded``, narrowed as wanted).
        draws: Attacker draws per cell and attribute.
        current: All the table's current records: an earlier ``reaudit.csv``'s rows of the
            other current cells are kept (None: the file holds ``records`` only).

    Returns:
        The written files.

    Raises:
        FederatedTableError: No record has an export on this machine.
    """
    rows: list[dict[str, Any]] = []
    for record, shadow in _exports(spec, records):
        for row in reaudit_export(record["export"], list(spec.attributes), draws, shadow=shadow):
            rows.append({**_keys(record), **row})
    frame = _write_rows(spec, rows, records, current, "reaudit.csv")
    summary = _summary(spec, frame)
    (spec.out / "reaudit.md").write_text(_markdown(spec, summary, draws))
    return [spec.out / "reaudit.csv", spec.out / "reaudit.md"]


def _summary(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Per table row: the table's draw, the mean over draws, their spreads (seed means)."""
    out = []
    for backbone, attribute, method, mine in _rows_of(spec, frame):
        per_seed = mine.groupby("seed")["balanced_accuracy"]
        seed_means = per_seed.mean()
        out.append(
            {
                "backbone": backbone,
                "attribute": attribute,
                "method": method,
                "n": int(seed_means.size),
                "chance": float(mine["chance"].iloc[0]),
                "BAcc draw 0 (the table's)": float(
                    mine[mine["draw"] == 0]["balanced_accuracy"].mean()
                ),
                "BAcc mean over draws": float(seed_means.mean()),
                "sd over seeds": float(seed_means.std(ddof=1)) if seed_means.size > 1 else np.nan,
                "sd over draws": float(per_seed.std(ddof=1).mean()),
                "min draw": float(mine["balanced_accuracy"].min()),
                "max draw": float(mine["balanced_accuracy"].max()),
            }
        )
    return pd.DataFrame(out)


def _markdown(spec: TableSpec, summary: pd.DataFrame, draws: int) -> str:
    head = (__doc__ or "").split("\n\n")[1].replace("\n", " ")
    return (
        f"# Re-audit of {spec.source}: the outside attacker over {draws} draws\n\n"
        f"{head}\n\n"
        "Columns: the table's draw (seed 0) and the mean over the draws, both averaged over "
        "the training seeds (n); `sd over seeds` of the per-seed draw means; `sd over draws` "
        "within a cell (mean over seeds); the extreme single draws. FedRAP: the MLP on the "
        "exported representation, not the table's per-column ensemble.\n\n"
        + markdown_table(summary)
        + "\n"
    )


_CELL = ("backbone", "method", "target", "seed", "fingerprint")


def _keys(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "backbone": record["backbone"],
        "method": record["method"],
        "target": record["attribute"],
        "seed": int(record["seed"]),
        "fingerprint": str(record.get("fingerprint", "")),
    }


def _merged(
    path: Path,
    frame: pd.DataFrame,
    records: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]] | None,
) -> pd.DataFrame:
    """``frame`` plus the rows of ``path`` of the table's other current cells.

    A re-audit narrowed by ``--only`` replaces its own cells' rows and keeps the rest of an
    earlier file, as long as they belong to a cell of ``current`` with the same config
    fingerprint (a cell re-run since, or gone from the table, is dropped).
    """
    if current is None or not path.is_file():
        return frame
    old = pd.read_csv(path, dtype={"fingerprint": str})
    if not set(_CELL) <= set(old.columns):
        return frame  # a file of before the fingerprint column: replaced
    redone = {tuple(_keys(r).values()) for r in records}
    valid = {tuple(_keys(r).values()) for r in current} - redone
    cells = zip(*(old[c] for c in _CELL), strict=True)
    keep = old[[(b, m, t, int(s), str(f)) in valid for b, m, t, s, f in cells]]
    return pd.concat([keep, frame], ignore_index=True) if len(keep) else frame


def _write_rows(
    spec: TableSpec,
    rows: list[dict[str, Any]],
    records: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]] | None,
    name: str,
) -> pd.DataFrame:
    """Merge ``rows`` into ``spec.out / name`` (:func:`_merged`), write it, return it.

    Raises:
        FederatedTableError: No row (no record had its export on this machine).
    """
    if not rows:
        raise FederatedTableError(
            f"no recorded cell of {spec.source} has its export on this machine (exports/ are "
            "not kept between machines): run the table first"
        )
    frame = _merged(spec.out / name, pd.DataFrame(rows), records, current)
    spec.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(spec.out / name, index=False)
    return frame


def _exports(
    spec: TableSpec, records: Sequence[Mapping[str, Any]]
) -> list[tuple[Mapping[str, Any], np.ndarray]]:
    """The records whose export is on this machine, each with its shadow mask (the export's
    own, or rebuilt from the cell's data config for an export written without one)."""
    out: list[tuple[Mapping[str, Any], np.ndarray]] = []
    rebuilt: dict[str, np.ndarray] = {}
    for record in records:
        export = record.get("export")
        if not export or not Path(export).is_file():
            continue
        with np.load(export) as data:
            own = np.asarray(data["shadow"], dtype=bool) if "shadow" in data.files else None
            user_ids = np.asarray(data["user_id"], dtype=str)
        if own is None:
            key = record["backbone"]
            if key not in rebuilt:
                extra = spec.cli_args.get(key, ())
                rebuilt[key] = _shadow_from_config(Path(record["config"]), extra, user_ids)
            own = rebuilt[key]
        out.append((record, own))
    return out


def reaudit_leakage(
    spec: TableSpec,
    records: Sequence[Mapping[str, Any]],
    permutations: int = 5,
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
    protocols: Sequence[str] = PROTOCOLS,
    log: Callable[[str], None] | None = None,
    current: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Issue 23's leakage audit of every recorded cell's export; ``leakage.csv`` / ``.md``.

    Args:
        spec: The table.
        records: The cells to audit (``runner.recorded``, narrowed as wanted).
        permutations: Label permutations of each null (the floor "at chance" is their p95).
        attackers: Attacker names (:data:`~lit_unlearn.attacks.leakage.DEFAULT_ATTACKERS`).
        protocols: ``shadow`` (the table's split) and / or ``kfold`` (5 folds, all users).
        log: Called with a line per finished (cell, attribute, attacker, protocol).
        current: All the table's current records: an earlier ``leakage.csv``'s rows of the
            other current cells are kept (None: the file holds ``records`` only).

    Returns:
        The written files.

    Raises:
        FederatedTableError: No record has an export on this machine.
    """
    rows: list[dict[str, Any]] = []
    for record, shadow in _exports(spec, records):
        with np.load(record["export"]) as data:
            z = np.asarray(data["representation"], dtype=np.float32)
            codes = {a: np.asarray(data[f"attr_{a}"]) for a in spec.attributes}
        results = audit_leakage(
            z,
            codes,
            dict(spec.attributes),
            attackers=attackers,
            protocols=protocols,
            shadow=shadow,
            n_permutations=permutations,
            seed=0,
            log=_prefixed(log, str(record["export"])),
        )
        for result in results:
            rows.append(
                {
                    **_keys(record),
                    **{k: v for k, v in result.as_dict().items() if k != "class_aucs"},
                    "leakage_above_null": result.leakage_above_null,
                }
            )
    frame = _write_rows(spec, rows, records, current, "leakage.csv")
    (spec.out / "leakage.md").write_text(_leakage_markdown(spec, frame, permutations))
    return [spec.out / "leakage.csv", spec.out / "leakage.md"]


def _prefixed(log: Callable[[str], None] | None, prefix: str) -> Callable[[str], None] | None:
    if log is None:
        return None
    sink = log
    return lambda line: sink(f"{prefix}: {line}")


def _rows_of(spec: TableSpec, frame: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """``(backbone, attribute, method, rows)`` per table row, as the table assigns runs."""
    out = []
    for backbone in spec.backbones:
        for attribute in spec.attributes:
            for method in spec.methods:
                mine = frame[
                    (frame["backbone"] == backbone)
                    & (frame["method"] == method.name)
                    & (frame["attribute"] == attribute)
                ]
                if method.targets is None or attribute in method.targets:
                    # As the table: a method run per attribute shows its cell of that one;
                    # one run for all (Original, APM) serves every attribute's row.
                    mine = mine[mine["target"] == attribute]
                if not mine.empty:
                    out.append((backbone, attribute, method.name, mine))
    return out


def _leakage_markdown(spec: TableSpec, frame: pd.DataFrame, permutations: int) -> str:
    summary = []
    for backbone, attribute, method, mine in _rows_of(spec, frame):
        means = (
            mine.groupby(["attacker", "protocol"], sort=False)
            .agg(
                above=("leakage_above_null", "mean"),
                auc=("auc", "mean"),
                bacc=("balanced_accuracy", "mean"),
                chance=("chance", "first"),
            )
            .reset_index()
        )
        where = (means["attacker"] + "/" + means["protocol"]).tolist()
        above = means["above"].to_numpy(dtype=float)
        auc = means["auc"].to_numpy(dtype=float)
        off = (means["bacc"] - means["chance"]).to_numpy(dtype=float)
        worst, lowest, farthest = (
            int(np.nanargmax(above)),
            int(np.nanargmin(auc)),
            int(np.nanargmax(np.abs(off))),
        )
        summary.append(
            {
                "backbone": backbone,
                "attribute": attribute,
                "method": method,
                "n": int(mine["seed"].nunique()),
                "worst leakage - null p95": float(above[worst]),
                "worst at": where[worst],
                "lowest AUC": float(auc[lowest]),
                "lowest at": where[lowest],
                "worst BAcc - chance": float(off[farthest]),
                "farthest at": where[farthest],
            }
        )
    return (
        f"# Leakage from both sides: {spec.source}\n\n"
        "Issue 23's audit on the cells' exported representations "
        "(`lit_unlearn.attacks.leakage`): flip-aware leakage 2|AUC - 0.5| (3 classes: the "
        "mean of the one-vs-rest terms) of logistic regression, MLP, XGBoost and kNN, under the "
        "table's shadow split (`shadow`) and 5-fold cross-validation over all users (`kfold`), "
        f"each against {permutations} label permutations (the floor is their 95th percentile). "
        "Per row, the seed means per attacker and protocol, and of those: the largest leakage "
        "above the floor, the lowest AUC (below 0.5: inverted, recoverable by flipping) and the "
        "balanced accuracy farthest from chance. Every cell: `leakage.csv`.\n\n"
        + markdown_table(pd.DataFrame(summary))
        + "\n"
    )
