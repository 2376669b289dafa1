"""The attribute-unlearning comparison table (AttrCloak Tables IV-VI, Fig. 4-5) in one command.

For one dataset and its attributes: train (or load) the recommender, then from the same
checkpoint run AttrCloak-DD, AttrCloak-DF, U2U-R and D2D-R (and optionally the fixed-alpha
ablation), and report for each: MLP and XGBoost attacker accuracy and balanced accuracy per
attribute (attackers trained on the shadow users of the *unlearned* representation), HR/NDCG@5/10
under both ranking protocols, and the unlearning wall time. Writes Markdown + CSV, Fig. 4-style
histograms as PNG, and optionally logs everything to W&B.

Usage::

    python -m lit_unlearn.methods.attribute.experiment \\
        --data configs/data/ml100k.yaml --model configs/model/ncf.yaml --out runs/attrcloak_ml100k
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch

from lit_unlearn.attacks.audit import audit_embeddings
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.methods.attribute.attrcloak import AttrCloak
from lit_unlearn.methods.attribute.base import AttributeUnlearning, Target
from lit_unlearn.methods.attribute.baselines import D2DR, U2UR
from lit_unlearn.optim import FixedWeights
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


@dataclass
class MethodSpec:
    """One row of the table: how to build the callback and in which data mode it runs."""

    name: str
    data_free: bool
    build: Callable[[str, list[str] | None], AttributeUnlearning]
    epochs: int


@dataclass
class RowResult:
    method: str
    seconds: float
    ranking: dict[str, float]
    audit: list[dict[str, Any]] = field(default_factory=list)
    alpha_u: float | None = None
    seed: int = 0
    alpha_u_mean: float | None = None


def evaluate(
    task: RecommenderTask, data: RecommendationData, attributes: list[str] | None, seed: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test-split ranking metrics (both protocols) and the attribute audit of ``task``."""
    metrics = bare_trainer(1).test(task, data, verbose=False)[0]
    ranking = {k: float(v) for k, v in metrics.items()}
    audit = audit_embeddings(
        task.user_representation().cpu(), data.user_attributes, names=attributes, seed=seed
    )
    return ranking, [r.as_dict() for r in audit]


DEFAULT_SHRINKAGE = 1e-3  # AttrCloak's default ridge


def _interval(text: str) -> tuple[tuple[float, float], float]:
    """Parse a row spec ``'lo,hi'`` or ``'lo,hi,shrinkage'`` (alpha_u bounds [+ ridge])."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise ValueError(f"expected 'lo,hi' or 'lo,hi,shrinkage', got {text!r}")
    shrinkage = values[2] if len(values) == 3 else DEFAULT_SHRINKAGE
    return (values[0], values[1]), shrinkage


def _attrcloak(
    checkpoint: str,
    attributes: list[str] | None,
    *,
    mode: Literal["dd", "df"],
    lr: float,
    bounds: tuple[float, float],
    precision: Literal["float64", "float32"] = "float64",
    shrinkage: float = DEFAULT_SHRINKAGE,
    target: Target = "parameters",
) -> AttributeUnlearning:
    return AttrCloak(
        checkpoint=checkpoint,
        attributes=attributes,
        mode=mode,
        lr=lr,
        dd_bounds=bounds if mode == "dd" else (0.0, 1.0),
        df_bounds=bounds if mode == "df" else (0.1, 1.0),
        precision=precision,
        shrinkage=shrinkage,
        target=target,
    )


def default_methods(
    df_epochs: int,
    dd_epochs: int,
    lr: float,
    ablation: bool,
    df_bounds: Sequence[str] = ("0.1,1.0",),
    dd_bounds: Sequence[str] = ("0.0,1.0",),
    dd_lr: float = 1e-3,
    precision: Literal["float64", "float32"] = "float64",
    dd_target: Target = "parameters",
) -> list[MethodSpec]:
    """AttrCloak-DD/DF for each alpha_u interval, the two baselines, and the alpha grid.

    The paper's intervals are [0, 1] (DD) and [0.1, 1] (DF); several can be compared in one
    table (the row name carries the interval when it is not the paper's, and the covariance
    ridge when a spec ``'lo,hi,shrinkage'`` sets one other than the default).
    """
    methods = []
    modes: tuple[
        tuple[Literal["dd", "df"], Sequence[str], tuple[float, float], float, int], ...
    ] = (
        ("dd", dd_bounds, (0.0, 1.0), dd_lr, dd_epochs),
        ("df", df_bounds, (0.1, 1.0), lr, df_epochs),
    )
    for mode, intervals, paper, mode_lr, epochs in modes:
        for text in intervals:
            b, shrinkage = _interval(text)
            name = f"AttrCloak-{mode.upper()}"
            if b != paper:
                name += f" a_u in [{b[0]:g},{b[1]:g}]"
            if shrinkage != DEFAULT_SHRINKAGE:
                name += f" shrinkage {shrinkage:g}"
            target: Target = dd_target if mode == "dd" else "parameters"
            if target != "parameters":
                name += f" on the {target}"
            build = partial(
                _attrcloak,
                mode=mode,
                lr=mode_lr,
                bounds=b,
                precision=precision,
                shrinkage=shrinkage,
                target=target,
            )
            methods.append(MethodSpec(name, mode == "df", build, epochs))
    methods += [
        MethodSpec("U2U-R", True, lambda c, a: U2UR(checkpoint=c, attributes=a, lr=lr), df_epochs),
        MethodSpec("D2D-R", True, lambda c, a: D2DR(checkpoint=c, attributes=a, lr=lr), df_epochs),
    ]
    if ablation:
        for alpha in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            methods.append(
                MethodSpec(
                    f"DF alpha_u={alpha:.1f}",
                    True,
                    lambda c, a, alpha=alpha: AttrCloak(  # type: ignore[misc]
                        checkpoint=c,
                        attributes=a,
                        mode="df",
                        lr=lr,
                        combiner=FixedWeights([alpha, 1 - alpha]),
                        precision=precision,
                    ),
                    df_epochs,
                )
            )
    return methods


def run(args: argparse.Namespace) -> list[RowResult]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [args.trainer, args.data, args.model]
    pl.seed_everything(args.seed, verbose=False)
    task, data = cli_objects(configs, args.override)
    ckpt = Path(args.checkpoint) if args.checkpoint else out / "original.ckpt"
    if not args.checkpoint:
        trainer = bare_trainer(args.train_epochs)
        t0 = time.perf_counter()
        trainer.fit(task, data)
        print(f"trained the original model in {time.perf_counter() - t0:.1f} s", flush=True)
        trainer.save_checkpoint(ckpt)
    original = RecommenderTask.load_from_checkpoint(ckpt)
    seeds = [args.seed + k for k in range(args.repeats)]
    rows = []
    for seed in seeds:  # the attackers (and their shadow split) change with the seed
        ranking, audit = evaluate(original, data, None, seed)
        rows.append(RowResult("Original", 0.0, ranking, audit, seed=seed))
    reps = {"Original": original.user_representation().cpu()}
    methods = default_methods(
        args.df_epochs,
        args.dd_epochs,
        args.lr,
        args.ablation,
        args.df_bounds,
        args.dd_bounds,
        args.dd_lr,
        precision=args.precision,
        dd_target=args.dd_target,
    )
    # Data-dependent rows: the data config's batch size unless --dd-batch-size is given (one at
    # least the number of training pairs makes every step a full-data step on Eq. 20).
    dd_args = [f"--data.init_args.batch_size={args.dd_batch_size}"] if args.dd_batch_size else []
    if args.dd_negatives is not None:
        # more negatives per positive: the same expected BPR loss (Eq. 20), a lower-variance
        # gradient; the original model and the data-free rows are unaffected
        dd_args.append(f"--model.init_args.num_negatives={args.dd_negatives}")
    for spec in methods:
        if args.methods and spec.name not in args.methods and not spec.name.startswith("DF alpha"):
            continue
        mode_args = (
            [
                "--data.init_args.mode=data_free",
                f"--data.init_args.user_index={ckpt}",
                "--data.init_args.batch_size=1000000",
            ]
            if spec.data_free
            else dd_args
        )
        for seed in seeds:
            row, rep = run_method(
                spec, str(ckpt), configs, [*args.override, *mode_args], data, args, seed
            )
            rows.append(row)
            if seed == seeds[0]:
                reps[spec.name] = rep
            print(f"{spec.name} (seed {seed}): {row.seconds:.1f} s", flush=True)
    write_tables(rows, out)
    plot_distributions(reps, data, out, args.attributes or data.user_attributes.names)
    if args.wandb:
        log_wandb(rows, out, args)
    return rows


def run_method(
    spec: MethodSpec,
    ckpt: str,
    configs: list[str],
    overrides: list[str],
    data: RecommendationData,
    args: argparse.Namespace,
    seed: int,
) -> tuple[RowResult, torch.Tensor]:
    """Unlearn ``ckpt`` with one method and seed; evaluate ranking and the audit (same seed)."""
    method_task, method_data = cli_objects(configs, overrides)
    callback = spec.build(ckpt, args.attributes)
    pl.seed_everything(seed, verbose=False)
    trainer = bare_trainer(spec.epochs, callbacks=[callback])
    t0 = time.perf_counter()
    trainer.fit(method_task, method_data)
    seconds = time.perf_counter() - t0
    ranking, audit = evaluate(method_task, data, None, seed)
    trace = callback.alpha_trace
    row = RowResult(
        spec.name,
        seconds,
        ranking,
        audit,
        alpha_u=None if trace.numel() == 0 else float(trace[-1]),
        seed=seed,
        alpha_u_mean=None if trace.numel() == 0 else float(trace.mean()),
    )
    return row, method_task.user_representation().cpu()


def tables(rows: Sequence[RowResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Privacy (one row per method, seed, attribute, attacker) and utility (per method, seed)."""
    privacy = pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "attribute": a["attribute"],
                "attacker": a["attacker"],
                "accuracy": a["accuracy"],
                "balanced_accuracy": a["balanced_accuracy"],
                "auc": a["auc"],
                "chance": a["chance"],
                "majority_accuracy": a["majority_accuracy"],
                "bacc_minus_chance": a["balanced_accuracy"] - a["chance"],
                # the attacker's sample sizes: shadow users it trains / selects on, users it
                # is scored on (small attribute classes make the balanced accuracy noisy)
                "n_train": a["n_train"],
                "n_val": a["n_val"],
                "n_test": a["n_test"],
            }
            for r in rows
            for a in r.audit
        ]
    )
    utility = pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "seconds": r.seconds,
                "alpha_u": r.alpha_u,
                "alpha_u_mean": r.alpha_u_mean,
                **{
                    f"{p}/{m}": r.ranking.get(f"test/{p}/{m}", float("nan"))
                    for p in ("sampled", "full")
                    for m in METRICS
                },
            }
            for r in rows
        ]
    )
    return privacy, utility


def _mean_sd(values: pd.Series, digits: int = 3) -> str:
    """``mean`` or ``mean ± sd`` (sample sd) when several seeds were run."""
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def write_tables(rows: Sequence[RowResult], out: Path) -> None:
    """CSV per seed; Markdown with the mean (± sd over seeds) per method."""
    privacy, utility = tables(rows)
    privacy.to_csv(out / "privacy.csv", index=False)
    utility.to_csv(out / "utility.csv", index=False)
    seeds = sorted(set(utility["seed"]))
    lines = [
        "# Attribute unlearning comparison",
        "",
        "Attackers (MLP, XGBoost) are trained on the 20% shadow users' representation *after* each",
        "method and measured on the other 80%. Balanced accuracy's chance level is 1/#classes.",
        "Ranking: leave-one-out test item, `sampled` = vs 99 fixed negatives, `full` = vs all",
        "unseen items. Seconds = wall time of the unlearning fit on this machine. alpha_u = the",
        "privacy weight at the last step, alpha_u mean = its mean over all steps.",
        f"Seeds {seeds} (unlearning batch order and attackers): mean"
        + (" ± sample sd over seeds; per-seed values in the CSVs." if len(seeds) > 1 else "."),
        "",
        "## Privacy: balanced accuracy (accuracy in parentheses)",
        "",
    ]
    attrs = list(dict.fromkeys(privacy["attribute"]))
    attackers = list(dict.fromkeys(privacy["attacker"]))
    header = "| method | " + " | ".join(f"{a} {k}" for a in attrs for k in attackers) + " |"
    lines += [header, "|" + "---|" * (1 + len(attrs) * len(attackers))]
    chance = privacy.groupby("attribute")["chance"].first()
    lines.append(
        "| chance | " + " | ".join(f"{chance[a]:.3f}" for a in attrs for _ in attackers) + " |"
    )
    groups = privacy.groupby(["method", "attribute", "attacker"], sort=False)
    for method in dict.fromkeys(privacy["method"]):
        cells = []
        for a in attrs:
            for k in attackers:
                g = groups.get_group((method, a, k))
                cells.append(f"{_mean_sd(g['balanced_accuracy'])} ({g['accuracy'].mean():.3f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    numeric = utility.drop(columns=["seed"])
    mean = numeric.groupby("method", sort=False).mean()
    lines += ["", "## Utility and time (mean over seeds)", "", _markdown(mean.reset_index())]
    if len(seeds) > 1:
        sd = numeric.groupby("method", sort=False).std()
        lines += ["", "Sample sd over seeds:", "", _markdown(sd.reset_index())]
    lines.append("")
    (out / "comparison.md").write_text("\n".join(lines))
    print("\n".join(lines), flush=True)


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no tabulate dependency); floats with 4 decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.4f}"  # NaN -> empty
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def plot_distributions(
    reps: dict[str, torch.Tensor], data: RecommendationData, out: Path, attributes: Sequence[str]
) -> None:
    """Fig. 4-style plots: per-class histograms of two embedding dimensions with fitted Gaussians.

    The two dimensions are those whose class means differ most in the original representation
    (where an attacker looks first). One PNG per method and attribute, original beside it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib missing: no plots (pip install lit-unlearn[plots])", stacklevel=2)
        return
    attrs = data.user_attributes
    original = reps["Original"]
    for name in attributes:
        codes = attrs.codes[name]
        known = codes >= 0
        classes = attrs.classes[name]
        means = torch.stack(
            [original[codes == k].mean(0) for k in range(len(classes)) if (codes == k).any()]
        )
        dims = torch.argsort(means.std(0), descending=True)[:2].tolist()
        for method, rep in reps.items():
            if method == "Original":
                continue
            fig, axes = plt.subplots(2, 2, figsize=(9, 6), squeeze=False)
            for row, (label, r) in enumerate((("Original", original), (method, rep))):
                for col, dim in enumerate(dims):
                    ax = axes[row][col]
                    values = r[known, dim]
                    lo, hi = float(values.min()), float(values.max())
                    grid = torch.linspace(lo, hi, 200)
                    for k, cname in enumerate(classes[:8]):
                        v = r[codes == k, dim]
                        if len(v) < 2:
                            continue
                        ax.hist(
                            v.numpy(),
                            bins=30,
                            range=(lo, hi),
                            density=True,
                            alpha=0.35,
                            label=cname,
                            color=f"C{k}",
                        )
                        mu, sd = float(v.mean()), float(v.std()) + 1e-8
                        pdf = torch.exp(-0.5 * ((grid - mu) / sd) ** 2) / (
                            sd * (2 * torch.pi) ** 0.5
                        )
                        ax.plot(grid.numpy(), pdf.numpy(), color=f"C{k}")
                    ax.set_title(f"{label}: dim {dim}")
            axes[0][0].legend(fontsize=7)
            fig.suptitle(f"{name}: per-class distributions before and after {method}")
            fig.tight_layout()
            safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in method)
            fig.savefig(out / f"fig4_{safe}_{name}.png", dpi=90)
            plt.close(fig)


def log_wandb(rows: Sequence[RowResult], out: Path, args: argparse.Namespace) -> None:
    """Log both tables and the plots to W&B (honours WANDB_MODE=offline)."""
    import wandb

    privacy, utility = tables(rows)
    run = wandb.init(
        project=args.wandb_project, dir=str(out), config=vars(args), job_type="attribute_unlearning"
    )
    run.log(
        {
            "privacy": wandb.Table(dataframe=privacy),
            "utility": wandb.Table(dataframe=utility),
            **{p.stem: wandb.Image(str(p)) for p in sorted(out.glob("fig4_*.png"))},
        }
    )
    run.finish()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", default="configs/data/ml100k.yaml", help="data config (YAML)")
    p.add_argument("--model", default="configs/model/ncf.yaml", help="model config (YAML)")
    p.add_argument("--trainer", default="configs/trainer/cpu.yaml", help="trainer config (YAML)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra CLI override, repeatable, in the '=' form: --override=--data.init_args.seed=1",
    )
    p.add_argument("--checkpoint", default=None, help="trained model; if absent one is trained")
    p.add_argument("--train-epochs", type=int, default=30)
    p.add_argument(
        "--attributes", nargs="+", default=None, help="attributes to forget (default all)"
    )
    p.add_argument("--methods", nargs="*", default=None, help="subset of method names")
    p.add_argument("--ablation", action="store_true", help="add the fixed alpha_u grid (Fig. 5)")
    p.add_argument("--df-epochs", type=int, default=300, help="data-free steps (full-population)")
    p.add_argument(
        "--dd-epochs", type=int, default=1, help="data-dependent epochs over the interactions"
    )
    p.add_argument(
        "--dd-batch-size",
        type=int,
        default=None,
        help="data-dependent batch size (default: the data config's; >= #pairs = full-data steps)",
    )
    p.add_argument("--lr", type=float, default=1e-2, help="data-free learning rate (Adam)")
    p.add_argument("--dd-lr", type=float, default=1e-3, help="data-dependent learning rate (Adam)")
    p.add_argument(
        "--dd-target",
        choices=("parameters", "representation"),
        default="parameters",
        help="what the DD rows update: user-side parameters or the representation itself",
    )
    p.add_argument(
        "--dd-negatives",
        type=int,
        default=None,
        help="negatives per positive in the DD rows' BPR (default: the model config's)",
    )
    p.add_argument(
        "--df-bounds",
        nargs="+",
        default=["0.1,1.0"],
        help="DF rows: alpha_u intervals 'lo,hi' or 'lo,hi,shrinkage' (covariance ridge)",
    )
    p.add_argument(
        "--dd-bounds",
        nargs="+",
        default=["0.0,1.0"],
        help="DD rows: alpha_u intervals 'lo,hi' or 'lo,hi,shrinkage' (covariance ridge)",
    )
    p.add_argument(
        "--precision",
        choices=["float64", "float32"],
        default="float64",
        help="AttrCloak covariance dtype",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every method with seeds seed..seed+repeats-1 (batch order and attackers)",
    )
    p.add_argument("--out", default="runs/attribute_unlearning")
    p.add_argument("--wandb", action="store_true")
    p.add_argument("--wandb-project", default="lit_unlearn")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.dd_negatives is not None and args.dd_negatives < 1:
        p.error(f"--dd-negatives must be >= 1, got {args.dd_negatives}")
    if args.dd_batch_size is not None and args.dd_batch_size < 1:
        p.error(f"--dd-batch-size must be >= 1, got {args.dd_batch_size}")
    for text in [*args.df_bounds, *args.dd_bounds]:
        try:
            _interval(text)
        except ValueError as err:
            p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    rows = run(parse_args(argv))
    print(json.dumps({f"{r.method} (seed {r.seed})": round(r.seconds, 2) for r in rows}))


if __name__ == "__main__":
    main()
