"""``python -m lit_unlearn.methods.federated.experiment --config T.yaml``: run (or resume) a
FedAU2 table and render it (Markdown, CSV, PNG; W&B when the config names a project)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lit_unlearn.methods.federated.experiment.reaudit import reaudit, reaudit_leakage
from lit_unlearn.methods.federated.experiment.render import render
from lit_unlearn.methods.federated.experiment.runner import recorded, run_table, selected
from lit_unlearn.methods.federated.experiment.spec import load_table


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Run the table's missing cells and render; return the written files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="table config (YAML)")
    parser.add_argument(
        "--only",
        nargs="*",
        help="run only the cells of these backbones / methods / attributes (each kind narrows "
        "its own axis)",
    )
    parser.add_argument("--fresh", action="store_true", help="forget recorded cells first")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="render the recorded cells of the current config, run nothing",
    )
    parser.add_argument(
        "--reaudit",
        type=int,
        metavar="DRAWS",
        help="re-run the outside attacker on the recorded cells' exports with DRAWS seeds "
        "(writes reaudit.md / reaudit.csv; runs nothing else; --only narrows the cells)",
    )
    parser.add_argument(
        "--leakage",
        type=int,
        metavar="PERMUTATIONS",
        help="issue 23's leakage audit from both sides on the recorded cells' exports (4 "
        "attackers x shadow / 5-fold, a null of PERMUTATIONS label permutations; writes "
        "leakage.md / leakage.csv; runs nothing else; --only narrows the cells)",
    )
    args = parser.parse_args(argv)
    spec = load_table(args.config)
    if args.only:
        known = set(spec.backbones) | {m.name for m in spec.methods} | set(spec.attributes)
        unknown = sorted(set(args.only) - known)
        if unknown:
            parser.error(f"--only: {unknown} name no backbone, method or attribute of the table")
    if args.reaudit is not None or args.leakage is not None:
        only = set(args.only) if args.only else None
        current = recorded(spec)
        records = [
            r
            for r in current
            if only is None or selected(spec, r["backbone"], r["method"], r["attribute"], only)
        ]
        files = []
        if args.reaudit is not None:
            files += reaudit(spec, records, draws=args.reaudit, current=current)
        if args.leakage is not None:
            files += reaudit_leakage(
                spec, records, permutations=args.leakage, log=print, current=current
            )
        for path in files:
            print(path)
        return files
    if args.render_only:
        records = recorded(spec)
    else:
        records = run_table(spec, only=set(args.only) if args.only else None, fresh=args.fresh)
    files = render(spec, records)
    for path in files:
        print(path)
    return files


if __name__ == "__main__":
    main()
