"""Re-audit a finished table's exported representations with other attackers.

``python -m lit_unlearn.methods.attribute.experiment.reaudit --table DIR --attackers quadratic``

A table run (:mod:`.runner`, ``export: true``) leaves every (row, seed)'s representation in
``DIR/exports/seed{S}/{row}.npz`` with the users' attributes and shadow mask in
``DIR/exports/attributes.csv``. An outside auditor re-checks those files with an attacker the
table did not run; this does exactly that, with the table's protocols (shadow split, k-fold over
all users) and a permutation null per cell, seeded with each export's seed as the table seeds
its own audit (the folds follow the file's user order, so a re-audit with the table's attackers
agrees with the table's cells in distribution, not to the digit). It writes
``DIR/{stem}_cells.csv`` (every cell and seed) and ``DIR/{stem}.md`` (per row: the worst seed-mean
cell of leakage above the null and of balanced accuracy from chance, the lowest AUC), and reads
no checkpoint, so it runs on a table copied from elsewhere too.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lit_unlearn.attacks.audit import ATTACKERS
from lit_unlearn.attacks.export import load_exported
from lit_unlearn.attacks.leakage import PROTOCOLS, audit_leakage
from lit_unlearn.reporting.provenance import provenance, provenance_lines
from lit_unlearn.reporting.tables import markdown_table

__all__ = ["exports", "main", "reaudit", "summarise"]

_SEED_DIR = re.compile(r"^seed(\d+)$")


def exports(table: Path, rows: Sequence[str] | None = None) -> list[tuple[str, int, Path]]:
    """``(row stem, seed, .npz path)`` of every export under ``table/exports`` (sorted).

    Args:
        table: The table's report directory.
        rows: Keep only these row stems (file names without ``.npz``); ``None`` keeps all.

    Raises:
        FileNotFoundError: No ``exports/attributes.csv`` or no export at all.
        ValueError: A requested row has no export.
    """
    root = table / "exports"
    if not (root / "attributes.csv").is_file():
        raise FileNotFoundError(f"{root / 'attributes.csv'} is missing: was the table exported?")
    found: list[tuple[str, int, Path]] = []
    for folder in sorted(root.iterdir()):
        match = _SEED_DIR.match(folder.name)
        if folder.is_dir() and match:
            for npz in sorted(folder.glob("*.npz")):
                found.append((npz.stem, int(match.group(1)), npz))
    if not found:
        raise FileNotFoundError(f"no exports under {root}/seed*/")
    if rows is not None:
        missing = sorted(set(rows) - {stem for stem, _, _ in found})
        if missing:
            raise ValueError(
                f"no export for rows {missing}; exported: {sorted({s for s, _, _ in found})}"
            )
        found = [f for f in found if f[0] in set(rows)]
    return found


def reaudit(
    table: Path,
    attackers: Sequence[str],
    *,
    protocols: Sequence[str] = PROTOCOLS,
    permutations: int = 5,
    folds: int = 5,
    repeats: int = 1,
    rows: Sequence[str] | None = None,
    attacker_args: dict[str, dict[str, Any]] | None = None,
    log: Any = None,
) -> pd.DataFrame:
    """Audit every export with ``attackers``; one row per (export, attribute, attacker,
    protocol), with its row stem and seed; ``repeats`` k-fold draws pooled per cell."""
    frames = []
    attributes = table / "exports" / "attributes.csv"
    for stem, seed, path in exports(table, rows):
        start = time.perf_counter()
        users = load_exported(path, attributes)
        results = audit_leakage(
            users.representations,
            users.codes,
            users.num_classes,
            attackers=attackers,
            protocols=protocols,
            shadow=users.shadow,
            n_permutations=permutations,
            n_folds=folds,
            seed=seed,
            repeats=repeats,
            attacker_args=attacker_args,
        )
        frame = pd.DataFrame([r.as_dict() for r in results])
        frame.insert(0, "seed", seed)
        frame.insert(0, "row", stem)
        frames.append(frame)
        if log is not None:
            log(f"{stem} (seed {seed}): {time.perf_counter() - start:.1f} s")
    return pd.concat(frames, ignore_index=True)


def summarise(cells: pd.DataFrame) -> pd.DataFrame:
    """Per row: the worst seed-mean cell of leakage - null p95 and of |BAcc - chance|, and the
    lowest seed-mean AUC (below 0.5: ranked the wrong way round)."""
    frame = cells.assign(
        above=cells["leakage"] - cells["null_leakage_p95"],
        bacc=cells["balanced_accuracy"] - cells["chance"],
    )
    keys = ["row", "attribute", "attacker", "protocol"]
    means = frame.groupby(keys, sort=False)[["above", "bacc", "auc"]].mean().reset_index()
    seeds = frame.groupby("row", sort=False)["seed"].nunique()
    out: list[dict[str, Any]] = []
    for row in means["row"].unique().tolist():
        records = means[means["row"] == row].to_dict("records")

        def at(r: dict[str, Any]) -> str:
            return f"{r['attribute']}/{r['attacker']}/{r['protocol']}"

        leak = max(records, key=lambda r: float(r["above"]))
        bacc = max(records, key=lambda r: abs(float(r["bacc"])))
        low = min(records, key=lambda r: float(r["auc"]))
        out.append(
            {
                "row": row,
                "seeds": int(seeds[row]),
                "worst leakage - null p95": round(float(leak["above"]), 3),
                "leakage at": at(leak),
                "worst BAcc - chance": round(float(bacc["bacc"]), 3),
                "BAcc at": at(bacc),
                "lowest AUC": round(float(low["auc"]), 3),
                "AUC at": at(low),
            }
        )
    return pd.DataFrame(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.attribute.experiment.reaudit",
        description="Re-audit a table's exported representations with other attackers.",
    )
    p.add_argument("--table", required=True, help="the table's report directory")
    p.add_argument("--attackers", nargs="+", required=True, choices=sorted(ATTACKERS))
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    p.add_argument("--permutations", type=int, default=5, help="label permutations (null)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="k-fold draws pooled per cell")
    p.add_argument("--rows", nargs="+", default=None, help="row stems (export file names)")
    p.add_argument("--attacker-args", default=None, help="JSON, as the leakage command's")
    p.add_argument("--stem", default="reaudit", help="output file stem inside --table")
    return p


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the command line; returns the per-row summary."""
    args = _parser().parse_args(argv)
    table = Path(args.table)
    cells = reaudit(
        table,
        args.attackers,
        protocols=args.protocols,
        permutations=args.permutations,
        folds=args.folds,
        repeats=args.repeats,
        rows=args.rows,
        attacker_args=json.loads(args.attacker_args) if args.attacker_args else None,
        log=print,
    )
    cells.to_csv(table / f"{args.stem}_cells.csv", index=False)
    summary = summarise(cells)
    legend = (
        f"Re-audit of `{table}/exports` with {', '.join(args.attackers)}: protocols "
        f"{', '.join(args.protocols)}, {args.permutations} label permutations per cell, "
        f"{args.folds} folds ({args.repeats} fold draw(s) pooled), each export's seed. Worst "
        "over attributes x attackers x protocols of the seed means. Every cell and seed: "
        f"`{args.stem}_cells.csv`.\n\n"
    )
    machine = "\n".join(provenance_lines([provenance()]))
    (table / f"{args.stem}.md").write_text(
        f"# Re-audit\n\n{legend}{markdown_table(summary)}\n\nMeasured on:\n{machine}\n",
        encoding="utf-8",
    )
    print(f"wrote {table / (args.stem + '.md')}")
    return summary


if __name__ == "__main__":
    main()
