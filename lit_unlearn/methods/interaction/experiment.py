"""The AltEraser comparison (paper 003, Tables 3-5) in one command.

For one dataset and scenario: train the original ENMF model on ``D_a``, then Retrain and
Retrain* (same initialisation, another training order) on ``D_r``, warm-start fine-tuning, and
AltEraser with the AdamW, HF-Newton and AH-Newton block solvers from the original checkpoint,
and AH-Newton with the line-search extrapolation between passes ("+ELS", not in the paper).
For each model, over the forgetting users: re-predict score on ``D_f``, RBO@10/20/50 of their
top-k lists against Retrain's, Recall/NDCG@10/20/50 on their test items, the training or
unlearning time (Lightning ``Timer``, training loop only: data set-up is shared by all rows and
excluded) and the speed-up over Retrain. Several repetitions (``--repeats``) re-draw the split
and the request; quality columns are means, times medians.

Usage::

    python -m lit_unlearn.methods.interaction.experiment \\
        --data configs/data/ml100k_forgetting.yaml --scenario noise --out runs/alteraser_ml100k

Repetitions can be spread over invocations (``--seed 3 --repeats 2``) and reported together:
``--merge a/results.csv b/results.csv --out merged`` rebuilds the tables without training.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Timer

from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.metrics import forgetting_metrics
from lit_unlearn.methods.interaction.plateau import RelativeEarlyStopping
from lit_unlearn.methods.interaction.warm_start import WarmStart
from lit_unlearn.optim.block_solvers import AdamWBlock, AHNewtonBlock, BlockSolver, HFNewtonBlock
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

METHODS = (
    "Original",
    "Retrain",
    "Retrain*",
    "Warm-Start",
    "AltEraser[AdamW]",
    "AltEraser[HF-Newton]",
    "AltEraser[AH-Newton]",
    "AltEraser[AH-Newton]+ELS",
)
KS = (10, 20, 50)
# Backbone hyperparameters recorded in every row, so results.csv and the report name the model
# they were measured with even after the config file changes.
BACKBONE = ("embedding_dim", "negative_weight", "reg", "dropout")


def _objects(args: argparse.Namespace, seed: int, extra: Sequence[str]) -> tuple[Any, Any]:
    overrides = [
        f"--data.init_args.seed={seed}",
        f"--data.init_args.scenario={args.scenario}",
        f"--data.init_args.num_forget_users={args.num_forget_users}",
        *args.override,
        *extra,
    ]
    pl.seed_everything(seed, verbose=False)  # the same initialisation for every trained row
    task, data = cli_objects([args.data, args.model], overrides)
    if not isinstance(data, ForgettingData):
        raise TypeError(f"--data must configure a ForgettingData, got {type(data).__name__}")
    return task, data


def _fit(
    task: RecommenderTask, data: ForgettingData, callbacks: list[pl.Callback], args: Any, **kw: Any
) -> tuple[float, int]:
    timer = Timer()
    trainer = bare_trainer(kw.pop("max_epochs", args.max_epochs), [timer, *callbacks], **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*configure_optimizers.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(task, datamodule=data)
    seconds = timer.time_elapsed("train")
    return seconds, int(trainer.current_epoch)


def _stopper(args: argparse.Namespace) -> RelativeEarlyStopping:
    return RelativeEarlyStopping(rel_delta=args.rel_delta, patience=args.patience)


def _solver(name: str, args: argparse.Namespace) -> BlockSolver:
    if name == "AltEraser[AdamW]":
        return AdamWBlock(lr=args.lr, steps=args.adamw_steps)
    if name == "AltEraser[HF-Newton]":
        return HFNewtonBlock(cg_max_iter=args.cg_max_iter)
    return AHNewtonBlock()


def run_once(args: argparse.Namespace, seed: int, workdir: Path) -> list[dict[str, Any]]:
    """All rows of one repetition (one split and request)."""
    rows: list[dict[str, Any]] = []
    task, data = _objects(args, seed, ["--data.init_args.train_on=all"])
    seconds, epochs = _fit(task, data, [_stopper(args)], args)
    original = workdir / f"original_seed{seed}.ckpt"
    # The weights are all the unlearners need (UnlearningCallback reads "state_dict").
    torch.save({"state_dict": task.state_dict()}, original)
    models: dict[str, tuple[RecommenderTask, float, int]] = {"Original": (task, seconds, epochs)}
    # AltEraser's own time in its passes (block solves + objective), inside the Timer's: the
    # difference is Lightning's loop around them, which tells a slow solve from a slow loop.
    solver_seconds: dict[str, float] = {}
    backbone = {
        "embedding_dim": float(task.model.embedding_dim),
        "negative_weight": float(getattr(task.model, "negative_weight", float("nan"))),
        "reg": float(getattr(task.model, "reg", float("nan"))),
        "dropout": float(getattr(task.model, "dropout", float("nan"))),
    }
    for name in METHODS[1:]:
        if args.methods and name not in args.methods and name != "Retrain":
            continue
        extra = ["--data.init_args.train_on=remaining"]
        if name == "Retrain*":
            extra.append(f"--data.init_args.shuffle_seed={seed + 1000}")
        task, data = _objects(args, seed, extra)
        if name in ("Retrain", "Retrain*"):
            fitted = _fit(task, data, [_stopper(args)], args)
        elif name == "Warm-Start":
            fitted = _fit(task, data, [WarmStart(str(original), lr=args.lr), _stopper(args)], args)
        else:
            eraser = AltEraser(
                str(original),
                solver=_solver(name, args),
                max_passes=args.max_passes,
                tol=args.tol,
                extrapolate=name.endswith("+ELS"),
            )
            fitted = _fit(
                task, data, [eraser], args, max_epochs=args.max_passes, limit_train_batches=1
            )
            solver_seconds[name] = float(sum(eraser.pass_seconds))
        models[name] = (task, *fitted)
    # Evaluation: everything on the remaining-data module of this seed (same split, same D_f).
    _, data = _objects(args, seed, ["--data.init_args.train_on=remaining"])
    data.setup("test")
    users = data.forget_users
    test = torch.as_tensor(data.split.test)
    reference = None
    ordered = ["Retrain"] + [m for m in models if m != "Retrain"]
    results: dict[str, dict[str, float]] = {}
    for name in ordered:
        task, seconds, epochs = models[name]
        model = task.model.cpu().eval()
        values, lists = forgetting_metrics(
            model,
            users,
            data.forget_pairs,
            data.remaining_pairs,
            test,
            ks=KS,
            reference_lists=reference,
            rbo_p=args.rbo_p,
        )
        if name == "Retrain":
            reference = lists
            values.update({f"rbo@{k}": 1.0 for k in KS})
        objective = getattr(model, "objective", None)
        if callable(objective):
            # L_Dr where each model stopped (the expected loss with dropout): shows how far each
            # stopping rule is from the optimum, the same quantity for trained and unlearned rows.
            with torch.no_grad():
                values["objective"] = float(objective(data.remaining_pairs))
        results[name] = {**values, "seconds": seconds, "epochs": float(epochs)}
        if name in solver_seconds:
            results[name]["solver_seconds"] = solver_seconds[name]
    for name in METHODS:
        if name in results:
            rows.append({"seed": seed, "method": name, **backbone, **results[name]})
    return rows


def aggregate(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Mean quality over repetitions, median time, speed-up = median Retrain time / time."""
    frame = pd.DataFrame(rows)
    skip = ("seed", "method", "seconds", "solver_seconds", "epochs", *BACKBONE)
    quality = [c for c in frame.columns if c not in skip]
    grouped = frame.groupby("method", sort=False)
    table = grouped[quality].mean()
    table["seconds"] = grouped["seconds"].median()
    table["epochs"] = grouped["epochs"].median()
    if "solver_seconds" in frame:
        table["solver_seconds"] = grouped["solver_seconds"].median()
    retrain = float(table["seconds"]["Retrain"])
    table["speedup"] = retrain / table["seconds"]
    # Per repetition, Retrain's time over the method's (both measured minutes apart in the same
    # run): less sensitive to the machine's load drifting over a long run than the ratio of
    # medians, and its spread shows how far one run can be trusted.
    per_run = frame.pivot_table(index="seed", columns="method", values="seconds")
    ratios = per_run.rdiv(per_run["Retrain"], axis=0)
    table["speedup_run_median"] = ratios.median()
    table["speedup_run_min"] = ratios.min()
    table["speedup_run_max"] = ratios.max()
    run_columns = ["speedup", "speedup_run_median", "speedup_run_min", "speedup_run_max"]
    table.loc["Original", run_columns] = float("nan")
    return table.reindex([m for m in METHODS if m in table.index])


def _markdown(frame: pd.DataFrame, columns: Sequence[str], digits: int = 4) -> str:
    head = "| method | " + " | ".join(columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for method, row in frame.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            cells.append("-" if pd.isna(v) else f"{v:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _backbone_text(frame: pd.DataFrame) -> str:
    """`` (d = 64, c0 = 0.5, reg = 0.01)`` from the rows' backbone columns, ``""`` if absent."""
    names = {"embedding_dim": "d", "negative_weight": "c0", "reg": "reg", "dropout": "dropout"}
    parts = []
    for column, name in names.items():
        if column in frame.columns:
            values = sorted(frame[column].dropna().unique())
            parts.append(f"{name} = " + "/".join(f"{v:g}" for v in values))
    return f" ({', '.join(parts)})" if parts else ""


def _seeds_text(frame: pd.DataFrame) -> str:
    """``5 repetition(s), seeds 0..4``; seeds with gaps are listed one by one."""
    seeds = sorted(int(s) for s in frame["seed"].unique())
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    listed = f"{seeds[0]}..{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    return f"{len(seeds)} repetition(s), seeds {listed}"


def write_report(table: pd.DataFrame, rows: Sequence[dict[str, Any]], args: Any, out: Path) -> str:
    """Write report.md (Tables 3-5), results.csv (per repetition) and summary.csv."""
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    table.to_csv(out / "summary.csv")
    backbone = _backbone_text(frame)
    protocol = (
        f"Data `{args.data}`, scenario **{args.scenario}**, {args.num_forget_users} forgetting "
        f"users, per-user random 80/20 split, {_seeds_text(frame)} (each draws its own split, "
        f"request and initialisation); ENMF "
        f"from `{args.model}`{backbone}. Original / Retrain / Retrain* / Warm-Start stop when the "
        f"epoch loss improves by < {args.rel_delta:g} (relative) for {args.patience} epochs; "
        f"AltEraser stops when a pass lowers L_Dr by < {args.tol:g} (relative), at most "
        f"{args.max_passes} passes. Forgetting users only. Re-predict = mean score on D_f; "
        f"RBO@k (Webber's extrapolated, p = {args.rbo_p}) of each user's top-k list (items "
        "outside D_r) against Retrain's; Recall/NDCG@k on the test items, full ranking over all "
        "items outside D_r. Time = Lightning training loop (Timer), data set-up excluded; "
        "speed-up = median Retrain time / median time; speedup_run_* = median, min and max over "
        "repetitions of that repetition's Retrain time / time; solver_seconds = AltEraser's time "
        "inside its passes (the rest of `seconds` is Lightning's loop). Quality = mean over "
        "repetitions, time = median."
    )
    efficiency = ["seconds", "speedup", "speedup_run_median", "speedup_run_min"]
    efficiency += ["speedup_run_max", "epochs"]
    if "solver_seconds" in table:
        efficiency.append("solver_seconds")
    text = "\n\n".join(
        [
            "# AltEraser comparison",
            protocol,
            "## Table 3: consistency (forgetting users, training set)",
            _markdown(table, ["repredict", "rbo@10", "rbo@20", "rbo@50"]),
            "## Table 4: accuracy (forgetting users, test set)",
            _markdown(table, [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]),
            "## Table 5: efficiency",
            _markdown(table, efficiency, digits=2),
            "L_Dr at the end (the objective on the remaining data, expected over dropout masks; "
            "mean over repetitions):",
            _markdown(table, ["objective"], digits=2) if "objective" in table else "-",
        ]
    )
    (out / "report.md").write_text(text + "\n")
    return text


def merge(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Rows of several ``results.csv`` files (repetitions run in separate invocations).

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: A file lacks the ``seed``/``method``/``seconds`` columns, or two files hold
            the same (seed, method) row: a repetition would be counted twice.
    """
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--merge: no results file at {path}")
        frame = pd.read_csv(path)
        missing = {"seed", "method", "seconds"} - set(frame.columns)
        if missing:
            raise ValueError(f"--merge: {path} is not a results.csv (no {sorted(missing)} column)")
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    twice = rows[rows.duplicated(["seed", "method"], keep=False)]
    if len(twice):
        seeds = twice["seed"].astype(int).tolist()
        pairs = sorted(set(zip(seeds, twice["method"].astype(str), strict=True)))
        raise ValueError(f"--merge: (seed, method) rows in more than one file: {pairs}")
    rows = rows.sort_values("seed", kind="stable")
    return [{str(k): v for k, v in r.items() if not pd.isna(v)} for r in rows.to_dict("records")]


def run(args: argparse.Namespace) -> pd.DataFrame:
    out = Path(args.out)
    workdir = out / "checkpoints"
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    rows: list[dict[str, Any]] = []
    for r in range(args.repeats):
        rows.extend(run_once(args, args.seed + r, workdir))
    table = aggregate(rows)
    write_report(table, rows, args, out)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", default="configs/data/ml100k_forgetting.yaml")
    p.add_argument("--model", default="configs/model/enmf.yaml")
    p.add_argument("--scenario", choices=["noise", "privacy"], default="noise")
    p.add_argument("--num-forget-users", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="*", default=None, help=f"subset of {list(METHODS)}")
    p.add_argument("--max-epochs", type=int, default=500)
    p.add_argument("--rel-delta", type=float, default=1e-3, help="training stop: relative gain")
    p.add_argument("--patience", type=int, default=10, help="training stop: epochs (paper: 10)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW lr of warm-start / AltEraser")
    p.add_argument("--adamw-steps", type=int, default=10, help="AdamW steps per AltEraser block")
    p.add_argument("--cg-max-iter", type=int, default=50)
    p.add_argument("--tol", type=float, default=1e-3, help="AltEraser stop: relative gain/pass")
    p.add_argument("--max-passes", type=int, default=20)
    p.add_argument("--rbo-p", type=float, default=0.9)
    p.add_argument("--override", action="append", default=[], help="extra CLI override")
    p.add_argument("--out", default="runs/alteraser")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="trains nothing: rebuild the report in --out from these results.csv files "
        "(repetitions run in separate invocations; pass the protocol flags they were run with)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        rows = merge(args.merge)
        table = aggregate(rows)
        write_report(table, rows, args, Path(args.out))
    else:
        table = run(args)
    print(json.dumps({m: round(float(s), 3) for m, s in table["seconds"].items()}))


if __name__ == "__main__":
    main()
