"""Reports of the class-unlearning comparison: Table 1 / Table 2 style Markdown + CSV, Fig. 3
(A_r against execution time) and a grid of synthetic samples per class, as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from lit_unlearn.methods.class_unlearning.experiment.config import TableSpec
from lit_unlearn.methods.class_unlearning.experiment.runner import Synthetic
from lit_unlearn.reporting.plots import pyplot, safe_stem, save_figure
from lit_unlearn.reporting.tables import markdown_table

__all__ = ["plot_accuracy_time", "plot_samples", "summarize", "write_report"]

METRICS = ("acc", "A_r", "A_f", "MIA", "unlearn_s", "total_s", "synthesis_s", "score_evals")
_COLUMNS = {
    "test acc (%)": ("acc", 100, 2),
    "A_r (%)": ("A_r", 100, 2),
    "A_f (%)": ("A_f", 100, 2),
    "MIA (%)": ("MIA", 100, 2),
    "time (s)": ("unlearn_s", 1, 2),
    "time + eval (s)": ("total_s", 1, 2),
    "score evals / sample": ("score_evals", 1, 0),
}


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd of every metric per (k, method), over seeds and requests (row order kept).

    Returns:
        Indexed by ``(k, method)``; ``{metric}`` and ``{metric}_sd`` columns, ``data_needed``
        and ``runs``.
    """
    results = results.copy()
    if "k" not in results:  # results.csv of single-class tables written before k existed
        results["k"] = results["forget"].astype(str).str.count(",") + 1
    if "data_needed" not in results:
        results["data_needed"] = "?"
    metrics = [m for m in METRICS if m in results]
    order = list(dict.fromkeys(zip(results["k"], results["method"], strict=True)))
    grouped = results.groupby(["k", "method"], sort=False)
    mean, sd = grouped[metrics].mean(), grouped[metrics].std(ddof=1)
    index = pd.MultiIndex.from_tuples(order, names=["k", "method"])
    table = pd.DataFrame(index=index)
    table["data_needed"] = grouped["data_needed"].first()
    for metric in metrics:
        table[metric] = mean[metric]
        table[f"{metric}_sd"] = sd[metric]
    table["runs"] = grouped.size()
    return table


def _cell(mean: float, sd: float, scale: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return (
        text if pd.isna(sd) or (sd == 0 and digits == 0) else f"{text} +- {sd * scale:.{digits}f}"
    )


def _shown(summary: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"method": summary.index.get_level_values("method")})
    shown["data needed"] = summary["data_needed"].fillna("?").tolist()
    for title, (metric, scale, digits) in _COLUMNS.items():
        if metric not in summary or summary[metric].isna().all():
            continue
        means = summary[metric].astype(float).tolist()
        sds = summary[f"{metric}_sd"].astype(float).tolist()
        shown[title] = [_cell(m, s, scale, digits) for m, s in zip(means, sds, strict=True)]
    shown["runs"] = summary["runs"].tolist()
    return shown


def write_report(
    results: pd.DataFrame,
    summary: pd.DataFrame,
    spec: TableSpec,
    out: Path,
    figures: Sequence[Path] = (),
) -> Path:
    """``results.csv``, ``summary.csv`` and ``report.md``: one table per request size k."""
    results.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv")
    requests = "; ".join(",".join(str(c) for c in r) for r in spec.forget_classes)
    text = [
        "# Class unlearning: " + ", ".join(dict.fromkeys(summary.index.get_level_values(1))),
        "",
        f"Configs: {', '.join(spec.configs)}; overrides: {spec.overrides or 'none'}.",
        f"Seeds {spec.seeds} x forgetting requests [{requests}]; mean +- sd over the runs of "
        "each request size k (Table 1: k = 1; Table 2: k > 1).",
        *(
            f"{row.name}: {row.method} for {row.epochs} epochs, init_args "
            f"{_init_args(row.callback)}; overrides {list(row.overrides) or 'none'}."
            for row in spec.rows
        ),
        "",
        "Protocol. test acc: accuracy on every test image. A_r / A_f: test accuracy pooled "
        "over the retain / forget classes' test images. MIA: SSD's entropy attack (logistic "
        "regression, balanced classes, retain-train members vs all test images), the share of "
        "forget-train images called member. time: wall seconds to produce the model (Original: "
        "its training; a method: its whole fit from the Original's checkpoint, synthesis "
        "included); time + eval adds the audit (DSDA's ET). data needed: the training data a "
        "method reads (none = source-free). Same machine, same process, one run after another.",
    ]
    for k in dict.fromkeys(summary.index.get_level_values("k")):
        part = summary[summary.index.get_level_values("k") == k]
        title = "single-class" if k == 1 else f"{k} classes at once"
        text += ["", f"## k = {k} ({title})", "", markdown_table(_shown(part))]
    if figures:
        text += ["", "Figures: " + ", ".join(f"`{Path(f).name}`" for f in figures) + "."]
    text += ["", "Per run: results.csv."]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def _init_args(callback: dict[str, object]) -> str:
    args = dict(callback.get("init_args") or {})  # type: ignore[call-overload]
    args.pop("checkpoint", None)
    return str(args)


def plot_accuracy_time(summary: pd.DataFrame, out: Path) -> list[Path]:
    """Fig. 3: mean A_r against mean execution time (with evaluation), one PNG per k."""
    plt = pyplot()
    if plt is None:
        return []
    paths = []
    for k in dict.fromkeys(summary.index.get_level_values("k")):
        part = summary.xs(k, level="k")
        part = part[part.index != "Original"]  # its time is training, not unlearning
        if part.empty:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, row in part.iterrows():
            ax.errorbar(
                row["total_s"], 100 * row["A_r"],
                xerr=row.get("total_s_sd") if pd.notna(row.get("total_s_sd")) else None,
                yerr=100 * row["A_r_sd"] if pd.notna(row["A_r_sd"]) else None,
                fmt="o", capsize=3, label=f"{name} (A_f {100 * row['A_f']:.1f}%)",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("execution time incl. evaluation (s, log)")
        ax.set_ylabel("A_r (%)")
        ax.set_title(f"A_r vs time, k = {k}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"accuracy_time_k{k}.png"))
    return paths


def plot_samples(samples: Sequence[Synthetic], out: Path, per_class: int = 8) -> list[Path]:
    """A grid of synthetic samples per class (rows: classes), one PNG per synthesising row."""
    plt = pyplot()
    if plt is None:
        return []
    paths = []
    for name, images, labels, class_names in samples:
        classes = sorted(int(c) for c in torch.unique(labels))
        fig, axes = plt.subplots(
            len(classes), per_class, figsize=(per_class * 0.8, len(classes) * 0.85),
            squeeze=False,
        )  # fmt: skip
        for r, c in enumerate(classes):
            picked = images[labels == c][:per_class]
            for j in range(per_class):
                ax = axes[r][j]
                ax.axis("off")
                if j < len(picked):
                    img = picked[j].permute(1, 2, 0).clamp(0, 1).numpy()
                    ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0,
                              vmax=1)  # fmt: skip
            axes[r][0].set_title(class_names[c], fontsize=7, loc="left")
        fig.suptitle(f"{name}: synthetic samples per class", fontsize=9)
        paths.append(save_figure(fig, out / f"samples_{safe_stem(name)}.png"))
    return paths
