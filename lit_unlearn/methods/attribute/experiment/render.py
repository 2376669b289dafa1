"""The table's report: per-seed CSVs, a Markdown summary, Fig. 4-style plots, a W&B run.

Markdown goes through :func:`lit_unlearn.reporting.tables.markdown_table` (the package's one
rounding and missing-value rule), figures through :mod:`lit_unlearn.reporting.plots`, W&B
through :func:`lit_unlearn.reporting.tracking.log_wandb_report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.methods.attribute.experiment.aggregate import mean_sd, tables
from lit_unlearn.methods.attribute.experiment.runner import ORIGINAL, RowResult
from lit_unlearn.reporting.plots import pyplot, safe_stem, save_figure
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.reporting.tracking import log_wandb_report

__all__ = ["comparison_markdown", "log_wandb", "plot_distributions", "write_tables"]

_NOTES = (
    "Attackers (MLP, XGBoost) are trained on the 20% shadow users' representation *after* each",
    "method and measured on the other 80%. Balanced accuracy's chance level is 1/#classes.",
    "Ranking: leave-one-out test item, `sampled` = vs 99 fixed negatives, `full` = vs all",
    "unseen items. Seconds = wall time of the unlearning fit on this machine. alpha_u = the",
    "privacy weight at the last step, alpha_u mean = its mean over all steps.",
)


def _privacy_summary(privacy: pd.DataFrame) -> pd.DataFrame:
    """Balanced accuracy ``mean [± sd] (accuracy mean)`` per method x (attribute, attacker)."""
    attrs = list(dict.fromkeys(privacy["attribute"]))
    attackers = list(dict.fromkeys(privacy["attacker"]))
    columns = [f"{a} {k}" for a in attrs for k in attackers]
    chance = privacy.groupby("attribute")["chance"].first()
    records = [["chance", *(f"{chance[a]:.3f}" for a in attrs for _ in attackers)]]
    groups = privacy.groupby(["method", "attribute", "attacker"], sort=False)
    for method in dict.fromkeys(privacy["method"]):
        cells = []
        for a in attrs:
            for k in attackers:
                g = groups.get_group((method, a, k))
                cells.append(f"{mean_sd(g['balanced_accuracy'])} ({g['accuracy'].mean():.3f})")
        records.append([method, *cells])
    return pd.DataFrame(records, columns=["method", *columns])


def comparison_markdown(privacy: pd.DataFrame, utility: pd.DataFrame) -> str:
    """The summary: privacy (Table IV-style) and utility/time (Tables V-VI), mean over seeds."""
    seeds = sorted(set(utility["seed"]))
    lines = [
        "# Attribute unlearning comparison",
        "",
        *_NOTES,
        f"Seeds {seeds} (unlearning batch order and attackers): mean"
        + (" ± sample sd over seeds; per-seed values in the CSVs." if len(seeds) > 1 else "."),
        "",
        "## Privacy: balanced accuracy (accuracy in parentheses)",
        "",
        markdown_table(_privacy_summary(privacy)),
    ]
    numeric = utility.drop(columns=["seed"])
    mean = numeric.groupby("method", sort=False).mean()
    lines += ["", "## Utility and time (mean over seeds)", "", markdown_table(mean, 4, index=True)]
    if len(seeds) > 1:
        sd = numeric.groupby("method", sort=False).std()
        lines += ["", "Sample sd over seeds:", "", markdown_table(sd, 4, index=True)]
    lines.append("")
    return "\n".join(lines)


def write_tables(rows: Sequence[RowResult], out: Path) -> str:
    """``privacy.csv``/``utility.csv`` per seed (full precision) and ``comparison.md``.

    Returns:
        The Markdown text.
    """
    privacy, utility = tables(rows)
    out.mkdir(parents=True, exist_ok=True)
    privacy.to_csv(out / "privacy.csv", index=False)
    utility.to_csv(out / "utility.csv", index=False)
    text = comparison_markdown(privacy, utility)
    (out / "comparison.md").write_text(text)
    return text


def plot_distributions(
    reps: Mapping[str, torch.Tensor],
    data: RecommendationData,
    out: Path,
    attributes: Sequence[str],
) -> list[Path]:
    """Fig. 4-style plots: per-class histograms of two embedding dimensions with fitted Gaussians.

    The two dimensions are those whose class means differ most in the original representation
    (where an attacker looks first). One PNG per method and attribute, original beside it.

    Returns:
        The PNG paths (none without matplotlib).
    """
    plt = pyplot()
    if plt is None:
        return []
    attrs = data.user_attributes
    original = reps[ORIGINAL]
    paths = []
    for name in attributes:
        codes = attrs.codes[name]
        known = codes >= 0
        classes = attrs.classes[name]
        means = torch.stack(
            [original[codes == k].mean(0) for k in range(len(classes)) if (codes == k).any()]
        )
        dims = torch.argsort(means.std(0), descending=True)[:2].tolist()
        for method, rep in reps.items():
            if method == ORIGINAL:
                continue
            fig, axes = plt.subplots(2, 2, figsize=(9, 6), squeeze=False)
            for row, (label, r) in enumerate(((ORIGINAL, original), (method, rep))):
                for col, dim in enumerate(dims):
                    _histograms(axes[row][col], r[:, dim], known, codes, classes)
                    axes[row][col].set_title(f"{label}: dim {dim}")
            axes[0][0].legend(fontsize=7)
            fig.suptitle(f"{name}: per-class distributions before and after {method}")
            fig.tight_layout()
            paths.append(save_figure(fig, out / f"fig4_{safe_stem(method)}_{name}.png"))
    return paths


def _histograms(
    ax: Any, values: torch.Tensor, known: torch.Tensor, codes: torch.Tensor, classes: list[str]
) -> None:
    """Per-class density histograms of one dimension, each with its fitted Gaussian."""
    lo, hi = float(values[known].min()), float(values[known].max())
    grid = torch.linspace(lo, hi, 200)
    for k, cname in enumerate(classes[:8]):  # more classes than colours read as noise
        v = values[codes == k]
        if len(v) < 2:
            continue
        ax.hist(
            v.numpy(), bins=30, range=(lo, hi), density=True, alpha=0.35, label=cname, color=f"C{k}"
        )
        mu, sd = float(v.mean()), float(v.std()) + 1e-8
        pdf = torch.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * (2 * torch.pi) ** 0.5)
        ax.plot(grid.numpy(), pdf.numpy(), color=f"C{k}")


def log_wandb(
    rows: Sequence[RowResult], out: Path, project: str, config: Mapping[str, Any]
) -> None:
    """Log both per-seed tables and the Fig. 4 plots as one W&B run (honours WANDB_MODE)."""
    privacy, utility = tables(rows)
    log_wandb_report(
        out,
        project=project,
        job_type="attribute_unlearning",
        config=config,
        tables={"privacy": privacy, "utility": utility},
        images=sorted(out.glob("fig4_*.png")),
    )
