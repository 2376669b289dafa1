"""``python -m lit_unlearn.methods.class_unlearning.experiment --config <table YAML>``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lit_unlearn.methods.class_unlearning.experiment.config import (
    TableConfigError,
    TableSpec,
    load_table,
)
from lit_unlearn.methods.class_unlearning.experiment.render import (
    plot_accuracy_time,
    plot_samples,
    summarize,
    write_report,
)
from lit_unlearn.methods.class_unlearning.experiment.runner import Synthetic, run_table
from lit_unlearn.reporting.tables import markdown_table

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.class_unlearning.experiment",
        description="Class-unlearning comparison: Original, Retrain and method rows.",
    )
    parser.add_argument("--config", required=True, help="table YAML")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the YAML's seeds")
    parser.add_argument("--out", help="replace the YAML's output folder")
    parser.add_argument(
        "--override", action="append", default=[], help="extra --key=value for every fit"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="rewrite summary.csv, report.md and the A_r-time plot from the output folder's "
        "results.csv (no runs)",
    )
    return parser.parse_args(argv)


def _jsonable(spec: TableSpec) -> dict[str, Any]:
    config = dataclasses.asdict(spec)
    config["rows"] = [
        {"name": r.name, "method": str(r.method), "epochs": r.epochs, "callback": r.callback}
        for r in spec.rows
    ]
    return config


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run (or ``--render``) the table; print and return the summary."""
    args = parse_args(argv)
    spec = load_table(args.config, seeds=args.seeds, out=args.out, overrides=args.override)
    out = Path(spec.out)
    samples: list[Synthetic] = []
    if args.render:
        results_csv = out / "results.csv"
        if not results_csv.is_file():
            raise TableConfigError(f"--render: {results_csv} does not exist (run the table first)")
        results = pd.read_csv(results_csv)
    else:
        results, samples = run_table(
            spec, progress=lambda partial: partial.to_csv(out / "results.csv", index=False)
        )
    summary = summarize(results)
    figures = [*plot_accuracy_time(summary, out), *plot_samples(samples, out)]
    if args.render:  # keep the sample grids an earlier run drew
        figures += sorted(p for p in out.glob("samples_*.png") if p not in figures)
    write_report(results, summary, spec, out, figures)
    if spec.wandb_project and not args.render:
        from lit_unlearn.reporting.tracking import log_wandb_report

        log_wandb_report(
            out, spec.wandb_project, "class_unlearning_table", _jsonable(spec),
            {"results": results, "summary": summary.reset_index()}, images=figures,
        )  # fmt: skip
    print(markdown_table(summary.reset_index(), digits=4))
    return summary


if __name__ == "__main__":
    main()
