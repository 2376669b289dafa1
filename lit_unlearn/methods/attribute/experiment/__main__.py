"""``python -m lit_unlearn.methods.attribute.experiment --config TABLE.yaml``: run a table.

Every method hyperparameter comes from the table YAML and the method configs it names (see
:mod:`.config`); the flags here only choose how much of it to run and where the report goes.

Each finished (row, seed) is appended to ``<out>/rows.jsonl`` at once; run the same command again
after a kill and it skips what is there (``--fresh`` starts over). See :mod:`.store`.

Usage::

    python -m lit_unlearn.methods.attribute.experiment \\
        --config configs/experiment/attribute/attrcloak_ml100k_table.yaml --repeats 3 \\
        --out runs/attrcloak_ml100k
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_unlearn.methods.attribute.experiment.config import TableConfigError, TableSpec, load_table
from lit_unlearn.methods.attribute.experiment.render import (
    log_wandb,
    plot_distributions,
    write_tables,
)
from lit_unlearn.methods.attribute.experiment.runner import RowResult, run_table

__all__ = ["main", "parse_args", "table_from_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The run-level flags (the table YAML holds everything else)."""
    p = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.attribute.experiment",
        description="The attribute-unlearning comparison table (AttrCloak Tables IV-VI, Fig. 4-5).",
    )
    p.add_argument("--config", required=True, help="the table YAML")
    p.add_argument("--repeats", type=int, default=None, help="seeds per row (default: the YAML's)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: the YAML's)")
    p.add_argument("--out", default=None, help="report directory (default: the YAML's)")
    p.add_argument("--rows", nargs="+", default=None, help="run only these rows (by name)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra CLI override of every model/data build, repeatable, in the '=' form: "
        "--override=--data.init_args.seed=1",
    )
    p.add_argument("--wandb", action="store_true", help="log the report to W&B as well")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="forget <out>/rows.jsonl (and a trained <out>/original.ckpt) instead of resuming",
    )
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def table_from_args(args: argparse.Namespace) -> TableSpec:
    """The table YAML with the run-level flags applied.

    Raises:
        TableConfigError: The YAML is invalid, or ``--rows`` names a row it does not have.
    """
    spec = load_table(args.config)
    changes: dict[str, Any] = {"overrides": (*spec.overrides, *args.override)}
    if args.repeats is not None:
        changes["repeats"] = args.repeats
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.out is not None:
        changes["out"] = Path(args.out)
    names = {r.name for r in spec.rows}
    unknown = [n for n in args.rows or () if n not in names]
    if unknown:
        raise TableConfigError(f"--rows: no row {unknown} in {args.config}; rows: {sorted(names)}")
    return dataclasses.replace(spec, **changes)


def _jsonable(spec: TableSpec) -> dict[str, Any]:
    """The table as plain JSON values (paths as strings), for the W&B run config."""
    result: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    return result


def main(argv: Sequence[str] | None = None) -> list[RowResult]:
    """Run the table, write its report (and W&B run), print the wall times.

    Returns:
        Every (row, seed) result, the original's first.
    """
    args = parse_args(argv)
    try:
        spec = table_from_args(args)
    except TableConfigError as err:
        raise SystemExit(f"error: {err}") from err
    run = run_table(spec, only=args.rows, fresh=args.fresh)
    if run.resumed:
        print(f"{run.resumed} (row, seed) result(s) read back from {spec.out / 'rows.jsonl'}")
    print(write_tables(run.rows, spec.out, run.context), flush=True)
    attributes = spec.attributes or run.data.user_attributes.names
    plot_distributions(run.representations, run.data, spec.out, attributes)
    if args.wandb:
        log_wandb(run.rows, spec.out, spec.wandb_project, _jsonable(spec))
    print(json.dumps({f"{r.method} (seed {r.seed})": round(r.seconds, 2) for r in run.rows}))
    return run.rows


if __name__ == "__main__":
    main()
