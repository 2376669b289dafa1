"""Train and evaluate every row of one repetition (paper 003, section 5: Tables 3-5)."""

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
from lit_unlearn.methods.interaction.experiment.aggregate import aggregate, merge
from lit_unlearn.methods.interaction.experiment.config import (
    KS,
    ORIGINAL,
    REFERENCE,
    ExperimentConfig,
    Row,
    instantiate_callbacks,
    load_experiment,
)
from lit_unlearn.methods.interaction.experiment.render import write_report
from lit_unlearn.methods.interaction.metrics import forgetting_metrics
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

__all__ = ["main", "parse_args", "run", "run_once"]


def _objects(
    config: ExperimentConfig, seed: int, methods: Sequence[str], extra: Sequence[str]
) -> tuple[RecommenderTask, ForgettingData]:
    """Model and data as ``lit-unlearn fit --config data --config model [--config method]``."""
    overrides = [
        f"--data.init_args.seed={seed}",
        f"--data.init_args.scenario={config.scenario}",
        f"--data.init_args.num_forget_users={config.num_forget_users}",
        *config.overrides,
        *extra,
    ]
    pl.seed_everything(seed, verbose=False)  # the same initialisation for every trained row
    task, data = cli_objects([config.data, config.model, *methods], overrides)
    if not isinstance(data, ForgettingData):
        raise TypeError(f"the data config must give a ForgettingData, got {type(data).__name__}")
    return task, data


def _fit(
    task: RecommenderTask,
    data: ForgettingData,
    callbacks: list[pl.Callback],
    max_epochs: int,
    **kwargs: Any,
) -> tuple[float, int]:
    """Train; the Lightning ``Timer``'s training-loop seconds and the epochs run."""
    timer = Timer()
    trainer = bare_trainer(max_epochs, [timer, *callbacks], **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*configure_optimizers.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(task, datamodule=data)
    return timer.time_elapsed("train"), int(trainer.current_epoch)


def _fit_row(
    config: ExperimentConfig, row: Row, seed: int, original: Path
) -> tuple[RecommenderTask, float, int, float | None]:
    """One method row from the original checkpoint (or from scratch: Retrain)."""
    extra = []
    if row.shuffle_seed_offset is not None:
        extra.append(f"--data.init_args.shuffle_seed={seed + row.shuffle_seed_offset}")
    task, data = _objects(config, seed, [str(row.method)], extra)
    callbacks = instantiate_callbacks(config.callback_specs(row, str(original)))
    kwargs = config.trainer_kwargs(row)
    seconds, epochs = _fit(task, data, callbacks, kwargs.pop("max_epochs"), **kwargs)
    erasers = [c for c in callbacks if isinstance(c, AltEraser)]
    # AltEraser's own time in its passes (block solves + objective), inside the Timer's: the
    # difference is Lightning's loop around them, which tells a slow solve from a slow loop.
    solver = float(sum(sum(e.pass_seconds) for e in erasers)) if erasers else None
    return task, seconds, epochs, solver


def _backbone(task: RecommenderTask) -> dict[str, float]:
    model = task.model
    return {
        "embedding_dim": float(getattr(model, "embedding_dim", float("nan"))),
        "negative_weight": float(getattr(model, "negative_weight", float("nan"))),
        "reg": float(getattr(model, "reg", float("nan"))),
        "dropout": float(getattr(model, "dropout", float("nan"))),
    }


def run_once(config: ExperimentConfig, seed: int, workdir: Path) -> list[dict[str, Any]]:
    """All rows of one repetition (one split, request and initialisation).

    The original model trains on ``D_a`` with the experiment's stop rule and is saved to
    ``workdir``; every selected row then runs from its method config; all are evaluated on the
    forgetting users of this seed against Retrain's lists.

    Returns:
        One dict per row (Original first, then the rows in table order): ``seed``, ``method``,
        the backbone hyperparameters, the quality metrics, ``objective`` (``L_Dr`` where the
        model stopped), ``seconds``, ``epochs`` and, for AltEraser rows, ``solver_seconds``.
    """
    task, data = _objects(config, seed, [], ["--data.init_args.train_on=all"])
    stop = instantiate_callbacks([config.stop])
    seconds, epochs = _fit(task, data, stop, config.max_epochs)
    original = workdir / f"original_seed{seed}.ckpt"
    # The weights are all the unlearners need (UnlearningCallback reads "state_dict").
    torch.save({"state_dict": task.state_dict()}, original)
    backbone = _backbone(task)
    models: dict[str, tuple[RecommenderTask, float, int]] = {ORIGINAL: (task, seconds, epochs)}
    solver_seconds: dict[str, float] = {}
    for row in config.selected():
        task, seconds, epochs, solver = _fit_row(config, row, seed, original)
        models[row.name] = (task, seconds, epochs)
        if solver is not None:
            solver_seconds[row.name] = solver
    # Evaluation: everything on the remaining-data module of this seed (same split, same D_f).
    _, data = _objects(config, seed, [], ["--data.init_args.train_on=remaining"])
    data.setup("test")
    users = data.forget_users
    test = torch.as_tensor(data.split.test)
    reference = None
    results: dict[str, dict[str, float]] = {}
    for name in [REFERENCE, *(m for m in models if m != REFERENCE)]:
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
            rbo_p=config.rbo_p,
        )
        if name == REFERENCE:
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
    return [
        {"seed": seed, "method": name, **backbone, **results[name]}
        for name in config.names
        if name in results
    ]


def run(config: ExperimentConfig) -> pd.DataFrame:
    """Every repetition of ``config``; writes the report into ``config.out``.

    Returns:
        The aggregated table (one row per method).
    """
    out = Path(config.out)
    workdir = out / "checkpoints"
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    rows: list[dict[str, Any]] = []
    for r in range(config.repeats):
        rows.extend(run_once(config, config.seed + r, workdir))
    table = aggregate(rows, config.names)
    write_report(table, rows, config, out)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Run-level flags only: every method hyperparameter is in the YAML files."""
    p = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.interaction.experiment",
        description="The AltEraser comparison (paper 003, Tables 3-5) from an experiment YAML.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="experiment YAML, e.g. configs/experiment/interaction/alteraser_ml100k_table.yaml",
    )
    p.add_argument("--scenario", choices=["noise", "privacy"], default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the first repetition")
    p.add_argument("--out", default=None)
    p.add_argument("--methods", nargs="+", default=None, help="run only these rows (+ Retrain)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra lit-unlearn override of the data/model configs (e.g. a data root)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="trains nothing: rebuild the report in --out from these results.csv files "
        "(repetitions run in separate invocations; pass the --config they were run with)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lit_unlearn.methods.interaction.experiment --config ...``."""
    args = parse_args(argv)
    config = load_experiment(
        args.config,
        scenario=args.scenario,
        repeats=args.repeats,
        seed=args.seed,
        out=args.out,
        methods=args.methods,
        overrides=args.override,
    )
    if args.merge:
        rows = merge(args.merge)
        table = aggregate(rows, config.names)
        write_report(table, rows, config, Path(config.out))
    else:
        table = run(config)
    print(json.dumps({m: round(float(s), 3) for m, s in table["seconds"].items()}))
