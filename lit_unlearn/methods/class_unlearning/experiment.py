"""The Original / Retrain / Fine-tune comparison table of class unlearning (one command).

``python -m lit_unlearn.methods.class_unlearning.experiment --config <table YAML>`` trains, per
seed, the Original model on every class once, then for every forgetting request (a list of
classes) Retrain (from scratch on the retain classes, the Original's schedule) and Fine-tune
(from the Original, on the retain classes), and audits each model with
:func:`~lit_unlearn.attacks.class_audit.audit_classifier` on the request's split. It writes
``results.csv`` (one row per seed, request and method), ``summary.csv`` and ``report.md``
(mean +- sd over seeds and requests) and logs both tables to W&B when asked.

Protocol of every number: A_r / A_f are test accuracies pooled over the retain / forget classes'
test images; MIA is SSD's entropy attack (retain-train members vs all test images, the fraction
of forget-train images called member); ``unlearn_s`` is the wall time to produce the model
(Original: its training; Fine-tune: its epochs on top of the Original) and ``total_s`` adds the
evaluation (the audit), as DSDA's ET does.

The table YAML::

    configs: [configs/experiment/class_unlearning/digits_cnn.yaml]  # a `lit-unlearn fit` stack
    overrides: []                  # extra --key=value for every fit
    seeds: [0, 1, 2]
    forget_classes: [[0], [3], [7]]  # each entry one request (indices or names)
    methods: [original, retrain, finetune]
    finetune:                      # one Fine-tune row per entry
      - {name: Fine-tune, epochs: 5, lr: 0.01, optimizer: sgd}
    out: runs/class_unlearning_digits
    wandb_project: null
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch
import yaml

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules.classification import ClassificationData
from lit_unlearn.methods.class_unlearning.finetune import FineTune
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.runs import bare_trainer, cli_run_objects
from lit_unlearn.tasks.classification import ClassificationTask

__all__ = ["FineTuneSettings", "TableConfig", "TableConfigError", "load_table", "main", "run"]

Method = Literal["original", "retrain", "finetune"]
METHODS: tuple[str, ...] = ("original", "retrain", "finetune")
NAMES = {"original": "Original", "retrain": "Retrain", "finetune": "Fine-tune"}
METRICS = ("acc", "A_r", "A_f", "MIA", "unlearn_s", "total_s")
_KEYS = {"configs", "overrides", "seeds", "forget_classes", "methods", "finetune", "out",
         "wandb_project"}  # fmt: skip


class TableConfigError(ValueError):
    """A table YAML that cannot describe the comparison."""


@dataclass(frozen=True)
class FineTuneSettings:
    """One Fine-tune row: the callback's arguments, its number of epochs and the row's name."""

    name: str = "Fine-tune"
    epochs: int = 5
    lr: float = 0.01
    optimizer: Literal["adam", "sgd"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TableConfig:
    """A parsed table YAML (see the module docstring)."""

    configs: list[str]
    out: str
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    forget_classes: list[list[int | str]] = field(default_factory=lambda: [[0]])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    overrides: list[str] = field(default_factory=list)
    finetune: list[FineTuneSettings] = field(default_factory=lambda: [FineTuneSettings()])
    wandb_project: str | None = None


def load_table(
    path: str | Path,
    seeds: list[int] | None = None,
    out: str | None = None,
    overrides: Sequence[str] = (),
) -> TableConfig:
    """Read and check a table YAML; command-line values replace the file's.

    Raises:
        TableConfigError: Unknown keys or methods, no config, seed or request, a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise TableConfigError(f"table config {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise TableConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - _KEYS
    if unknown:
        raise TableConfigError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    configs = [str(c) for c in raw.get("configs") or []]
    if not configs:
        raise TableConfigError(f"{path}: 'configs' names no lit-unlearn fit config")
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise TableConfigError(f"{path}: config file(s) not found: {missing}")
    methods = [str(m) for m in raw.get("methods") or METHODS]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise TableConfigError(f"{path}: unknown method(s) {bad}; known: {list(METHODS)}")
    requests = raw.get("forget_classes") or []
    if not requests or not all(isinstance(r, list) and r for r in requests):
        raise TableConfigError(
            f"{path}: 'forget_classes' must be a non-empty list of non-empty class lists"
        )
    specs = raw.get("finetune") or [{}]
    try:
        finetune = [
            FineTuneSettings(**spec) for spec in (specs if isinstance(specs, list) else [specs])
        ]
    except TypeError as err:
        raise TableConfigError(f"{path}: finetune: {err}") from err
    if any(f.epochs < 1 for f in finetune):
        raise TableConfigError(f"{path}: finetune epochs must be >= 1")
    if len({f.name for f in finetune}) != len(finetune):
        raise TableConfigError(f"{path}: finetune rows need distinct names")
    chosen_seeds = list(seeds) if seeds else [int(s) for s in raw.get("seeds") or [0]]
    return TableConfig(
        configs=configs,
        out=str(out or raw.get("out") or "runs/class_unlearning"),
        seeds=chosen_seeds,
        forget_classes=[list(r) for r in requests],
        methods=methods,
        overrides=[*(str(o) for o in raw.get("overrides") or []), *overrides],
        finetune=finetune,
        wandb_project=raw.get("wandb_project"),
    )


def _objects(
    config: TableConfig, seed: int, forget: list[int | str], train_on: str
) -> tuple[ClassificationTask, ClassificationData, int]:
    extra = [
        *config.overrides,
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--data.init_args.forget_classes={json.dumps(forget)}",
        f"--data.init_args.train_on={train_on}",
        "--data.init_args.mode=data_dependent",
    ]
    model, data, trainer = cli_run_objects(
        config.configs, extra, ClassificationTask, ClassificationData
    )
    return model, data, int(trainer.max_epochs or 1)


def _timed_fit(task: ClassificationTask, dm: ClassificationData, trainer: pl.Trainer) -> float:
    start = time.perf_counter()
    trainer.fit(task, dm)
    return time.perf_counter() - start


def _row(
    method: str, seed: int, forget: list[int | str], seconds: float, audit: dict[str, float]
) -> dict[str, Any]:
    return {
        "method": NAMES.get(method, method),
        "seed": seed,
        "forget": ",".join(str(c) for c in forget),
        "A_r": audit.get("A_r"),
        "A_f": audit.get("A_f"),
        "MIA": audit.get("MIA"),
        "acc": audit.get("acc"),
        "unlearn_s": seconds,
        "total_s": seconds + audit["seconds"],
    }


def run(config: TableConfig) -> pd.DataFrame:
    """Train, unlearn and audit every (seed, request, method); write the report.

    Returns:
        The summary (mean and sd per method).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        original, dm_all, epochs = _objects(config, seed, [], "all")
        original_s = _timed_fit(original, dm_all, bare_trainer(epochs))
        ckpt = out / f"original_seed{seed}.ckpt"
        torch.save({"state_dict": original.state_dict()}, ckpt)
        for forget in config.forget_classes:
            _, dm, _ = _objects(config, seed, forget, "all")
            dm.load()
            original.attach_data(dm)
            if "original" in config.methods:
                audit, _ = audit_classifier(original, dm, seed=seed)
                rows.append(_row("original", seed, forget, original_s, audit))
            if "retrain" in config.methods:
                task, dm_r, epochs = _objects(config, seed, forget, "retain")
                seconds = _timed_fit(task, dm_r, bare_trainer(epochs))
                audit, _ = audit_classifier(task, dm, seed=seed)
                rows.append(_row("retrain", seed, forget, seconds, audit))
            for settings in config.finetune if "finetune" in config.methods else []:
                task, dm_r, _ = _objects(config, seed, forget, "retain")
                ft = FineTune(checkpoint=str(ckpt), **_finetune_args(settings))
                trainer = bare_trainer(settings.epochs, callbacks=[ft])
                seconds = _timed_fit(task, dm_r, trainer)
                audit, _ = audit_classifier(task, dm, seed=seed)
                rows.append(_row(settings.name, seed, forget, seconds, audit))
            pd.DataFrame(rows).to_csv(out / "results.csv", index=False)  # partial results survive
    results = pd.DataFrame(rows)
    summary = summarize(results)
    write_report(results, summary, config, out)
    if config.wandb_project:
        from lit_unlearn.reporting.tracking import log_wandb_report

        log_wandb_report(
            out, config.wandb_project, "class_unlearning_table", asdict(config),
            {"results": results, "summary": summary},
        )  # fmt: skip
    return summary


def _finetune_args(settings: FineTuneSettings) -> dict[str, Any]:
    args = asdict(settings)
    args.pop("epochs")
    args.pop("name")
    return args


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd of every metric per method, over seeds and requests (method order kept)."""
    order = list(dict.fromkeys(results["method"]))  # first-seen order: Original, Retrain, ...
    grouped = results.groupby("method", sort=False)[list(METRICS)]
    mean, sd = grouped.mean(), grouped.std(ddof=1)
    table = pd.DataFrame(index=order)
    for metric in METRICS:
        table[metric] = mean[metric]
        table[f"{metric}_sd"] = sd[metric]
    table["runs"] = grouped.size()
    table.index.name = "method"
    return table


def _cell(mean: float, sd: float, scale: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if pd.isna(sd) else f"{text} +- {sd * scale:.{digits}f}"


def write_report(
    results: pd.DataFrame, summary: pd.DataFrame, config: TableConfig, out: Path
) -> None:
    """``results.csv``, ``summary.csv`` and ``report.md`` (percentages, mean +- sd)."""
    results.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv")
    columns = {
        "test acc (%)": ("acc", 100, 2),
        "A_r (%)": ("A_r", 100, 2),
        "A_f (%)": ("A_f", 100, 2),
        "MIA (%)": ("MIA", 100, 2),
        "time (s)": ("unlearn_s", 1, 1),
        "time + eval (s)": ("total_s", 1, 1),
    }
    shown = pd.DataFrame({"method": summary.index})
    for title, (metric, scale, digits) in columns.items():
        means = summary[metric].astype(float).tolist()
        sds = summary[f"{metric}_sd"].astype(float).tolist()
        shown[title] = [_cell(m, s, scale, digits) for m, s in zip(means, sds, strict=True)]
    shown["runs"] = summary["runs"].tolist()
    requests = "; ".join(",".join(str(c) for c in r) for r in config.forget_classes)
    text = [
        "# Class unlearning: " + ", ".join(summary.index),
        "",
        f"Configs: {', '.join(config.configs)}; overrides: {config.overrides or 'none'}.",
        f"Seeds {config.seeds} x forgetting requests [{requests}]; mean +- sd over all runs.",
        *(
            f"{f.name}: {f.epochs} epochs {f.optimizer} lr {f.lr} momentum {f.momentum} "
            f"weight decay {f.weight_decay} on the retain classes."
            for f in config.finetune
        ),
        "",
        "test acc: accuracy on every test image. "
        "A_r / A_f: test accuracy pooled over the retain / forget classes' test images. "
        "MIA: SSD's entropy attack (logistic regression, balanced classes, retain-train "
        "members vs all test images), the share of forget-train images called member. "
        "time: wall seconds to produce the model (Original: its training); time + eval adds "
        "the audit. Same machine, same process, one run after another.",
        "",
        markdown_table(shown),
        "",
        "Per run: results.csv.",
    ]
    (out / "report.md").write_text("\n".join(text) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_unlearn.methods.class_unlearning.experiment",
        description="Original / Retrain / Fine-tune class-unlearning table.",
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
        help="rewrite summary.csv and report.md from the output folder's results.csv (no runs)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lit_unlearn.methods.class_unlearning.experiment --config ...``."""
    args = parse_args(argv)
    config = load_table(args.config, seeds=args.seeds, out=args.out, overrides=args.override)
    if args.render:
        results_csv = Path(config.out) / "results.csv"
        if not results_csv.is_file():
            raise TableConfigError(f"--render: {results_csv} does not exist (run the table first)")
        results = pd.read_csv(results_csv)
        summary = summarize(results)
        write_report(results, summary, config, Path(config.out))
    else:
        summary = run(config)
    print(markdown_table(summary.reset_index(), digits=4))


if __name__ == "__main__":
    main()
