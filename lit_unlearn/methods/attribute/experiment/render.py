"""The table's report: per-seed CSVs, a Markdown summary, Fig. 4-style plots, a W&B run.

``comparison.md`` (privacy and utility, as before) and ``leakage.md`` (the flip-aware leakage
audit of issue 23: per method x attribute x attacker x protocol, and one summary line per
method), each CSV beside them; every file says what produced its numbers (provenance columns
in the per-seed CSVs, a provenance section in the Markdown).

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
from lit_unlearn.methods.attribute.experiment.aggregate import (
    BACC_TOLERANCE,
    LEAKAGE_TOLERANCE,
    leakage_frame,
    leakage_summary,
    mean_sd,
    method_summary,
    provenance_frame,
    tables,
)
from lit_unlearn.methods.attribute.experiment.runner import ORIGINAL, RowResult
from lit_unlearn.reporting.plots import pyplot, safe_stem, save_figure
from lit_unlearn.reporting.provenance import PROVENANCE_FIELDS, provenance, provenance_lines
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.reporting.tracking import log_wandb_report

__all__ = [
    "comparison_markdown",
    "leakage_header",
    "leakage_report",
    "log_wandb",
    "plot_distributions",
    "write_tables",
]

_NOTES = (
    "Attackers (MLP, XGBoost) are trained on the 20% shadow users' representation *after* each",
    "method and measured on the other 80%. Balanced accuracy's chance level is 1/#classes.",
    "Ranking: leave-one-out test item, `sampled` = vs 99 fixed negatives, `full` = vs all",
    "unseen items. Seconds = wall time of the unlearning fit on this machine. alpha_u = the",
    "privacy weight at the last step, alpha_u mean = its mean over all steps. The flip-aware",
    "leakage audit (four attackers, shadow and k-fold protocols, permutation null) is in",
    "leakage.md.",
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


def comparison_markdown(
    privacy: pd.DataFrame, utility: pd.DataFrame, env: pd.DataFrame | None = None
) -> str:
    """The summary: privacy (Table IV-style) and utility/time (Tables V-VI), mean over seeds.

    ``env`` (:func:`~.aggregate.provenance_frame`) adds a provenance section.
    """
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
    if env is not None:
        lines += ["", *_provenance_section(env)]
    lines.append("")
    return "\n".join(lines)


def _provenance_section(env: pd.DataFrame) -> list[str]:
    """Where the runs ran (distinct values over every run) and who wrote this file, when."""
    runs = [
        {str(k): v for k, v in record.items()}
        for record in env[[c for c in PROVENANCE_FIELDS if c in env]].to_dict("records")
    ]
    here = provenance()
    written = ", ".join(f"{k} {here[k]}" for k in ("git_commit", "date"))
    return [
        "## Provenance",
        "",
        f"{len(runs)} run(s) (method x seed; each one's own in the CSVs' columns and rows.jsonl):",
        "",
        *(provenance_lines(runs) or ["- not recorded"]),
        "",
        f"Rendered by {written}.",
    ]


def _join(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def leakage_header(leakage: pd.DataFrame, context: Mapping[str, Any] | None = None) -> list[str]:
    """The protocol of the leakage tables in words: attackers, protocols, null, seeds, data.

    ``context`` (:func:`~.runner.describe`) gives the folds, split, ranking protocols and shadow
    share; without it (results read back from elsewhere) what the results themselves say.
    """
    ctx = dict(context or {})
    attackers = ctx.get("attackers") or list(dict.fromkeys(leakage["attacker"]))
    protocols = ctx.get("protocols") or list(dict.fromkeys(leakage["protocol"]))
    perms = sorted({int(p) for p in leakage["n_permutations"]}) if len(leakage) else []
    permutations = ctx.get("permutations", _join(perms) or "?")
    seeds = ctx.get("seeds") or sorted({int(s) for s in leakage["seed"]})
    shadow = ctx.get("shadow_fraction")
    shadow_text = f"the {shadow:.0%} shadow users" if shadow is not None else "the shadow users"
    described = {
        "shadow": f"`shadow` (attackers train on {shadow_text}, a stratified 20% of them held "
        "out for validation, and are scored on every other labelled user)",
        "kfold": f"`kfold` (stratified {ctx.get('folds', 5)}-fold cross-validation over all "
        "labelled users: each is predicted once, by an attacker that never saw it)",
    }
    split = ctx.get("split", "not recorded")
    ranking = ctx.get("ranking_protocols") or ["sampled", "full"]
    negatives = ctx.get("eval_negatives", 99)
    ranking_text = {
        "sampled": f"`sampled` (the test item against {negatives} sampled negatives)",
        "full": "`full` (against every item the user has not interacted with)",
    }
    users = f" on {ctx['users']} users" if "users" in ctx else ""
    return [
        f"Protocol: attackers {_join(attackers)}; protocols "
        f"{'; '.join(described.get(p, p) for p in protocols)}; permutation null: "
        f"{permutations} label permutation(s) per cell (the same attacker and protocol, labels "
        f"shuffled among the labelled users), `null p95` their 95th percentile; seeds {seeds} "
        "(unlearning batch order, attackers, folds, validation draws and permutations); data "
        f"split `{split}`{users}; ranking protocols "
        f"{', '.join(ranking_text.get(p, p) for p in ranking)}.",
        "",
        "`BAcc - chance`: balanced accuracy minus 1/#classes (negative: below chance). `AUC`: "
        "signed (binary) or one-vs-rest macro AUC; below 0.5 the attacker ranks the wrong way "
        "round. `leakage`: 2|AUC - 0.5| (binary) or the class mean of 2|AUC_c - 0.5|: 0 at "
        "chance from both sides, 1 fully recovered, inverted or not. `leakage - null p95` > 0: "
        "more than label noise explains. `method-aware`: class scores whose validation AUC is "
        "below 0.5 reversed. Cells are means over seeds; `max` the largest over seeds.",
    ]


_SUMMARY_HEADERS = {
    "method": "method",
    "worst_leakage_above_null": "worst leakage - null p95",
    "worst_leakage_cell": "at",
    "max_leakage_above_null": "max over seeds",
    "worst_bacc_minus_chance": "worst BAcc - chance",
    "worst_bacc_cell": "at",
    "within_target": "within target",
    "sampled/ndcg@10": "sampled NDCG@10",
    "sampled/ndcg@10_change_pct": "vs Original (%)",
    "full/ndcg@10": "full NDCG@10",
    "full/ndcg@10_change_pct": "vs Original (%)",
}
_CELL_HEADERS = {
    "method": "method",
    "attribute": "attribute",
    "attacker": "attacker",
    "protocol": "protocol",
    "bacc_minus_chance": "BAcc - chance",
    "method_aware_minus_chance": "method-aware BAcc - chance",
    "auc": "AUC",
    "leakage": "leakage",
    "null_leakage_p95": "null p95",
    "leakage_above_null": "leakage - null p95",
    "max_leakage_above_null": "max leakage - null p95",
}


def leakage_report(
    leakage: pd.DataFrame,
    utility: pd.DataFrame,
    context: Mapping[str, Any] | None = None,
    env: pd.DataFrame | None = None,
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The leakage Markdown and its two tables.

    Args:
        leakage: :func:`~.aggregate.leakage_frame`.
        utility: :func:`~.aggregate.utility_frame`.
        context: :func:`~.runner.describe` of the run (the header).
        env: :func:`~.aggregate.provenance_frame` (a provenance section).

    Returns:
        ``(markdown, cells, methods)``: the text, :func:`~.aggregate.leakage_summary` and
        :func:`~.aggregate.method_summary`.
    """
    cells = leakage_summary(leakage)
    methods = method_summary(cells, utility)
    summary = methods.copy()
    summary["within_target"] = summary["within_target"].map(
        lambda v: "-" if v is None or pd.isna(v) else ("yes" if v else "no")
    )
    for col in ("sampled/ndcg@10_change_pct", "full/ndcg@10_change_pct"):
        summary[col] = summary[col].map(lambda v: "-" if pd.isna(v) else f"{v:+.1f}")
    lines = [
        "# Attribute leakage: does unlearning remove the signal or invert it?",
        "",
        *leakage_header(leakage, context),
        "",
        "## Per method",
        "",
        "Worst cell over every attribute, attacker and protocol (of the seed means); `within "
        f"target`: worst leakage - null p95 <= {LEAKAGE_TOLERANCE} and |worst BAcc - chance| <= "
        f"{BACC_TOLERANCE} (issue 23). NDCG@10: mean over seeds, change from the Original's.",
        "",
        markdown_table(
            summary[list(_SUMMARY_HEADERS)], digits=3, headers=list(_SUMMARY_HEADERS.values())
        ),
        "",
        "## Per method, attribute, attacker and protocol (mean over seeds)",
        "",
        (
            markdown_table(
                cells[list(_CELL_HEADERS)], digits=3, headers=list(_CELL_HEADERS.values())
            )
            if len(cells)
            else "No leakage audit in these results (leakage_attackers: [])."
        ),
    ]
    if env is not None:
        lines += ["", *_provenance_section(env)]
    lines.append("")
    return "\n".join(lines), cells, methods


def _with_provenance(frame: pd.DataFrame, env: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each run's provenance columns (matched on method and seed)."""
    if frame.empty:
        return frame.reindex(columns=[*frame.columns, *PROVENANCE_FIELDS])
    return frame.merge(env, on=["method", "seed"], how="left")


def _aggregated_provenance(frame: pd.DataFrame, env: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (one row per method) with each method's runs' distinct provenance values."""
    joined = {
        method: {
            k: "; ".join(sorted({str(v) for v in g[k] if v is not None and not pd.isna(v)}))
            for k in PROVENANCE_FIELDS
        }
        for method, g in env.groupby("method", sort=False)
    }
    extra = pd.DataFrame([joined.get(m, {}) for m in frame["method"]], index=frame.index)
    return pd.concat([frame, extra.reindex(columns=list(PROVENANCE_FIELDS))], axis=1)


def write_tables(
    rows: Sequence[RowResult], out: Path, context: Mapping[str, Any] | None = None
) -> str:
    """Write the report into ``out``.

    * ``privacy.csv``/``utility.csv``: per seed, full precision, with provenance columns;
    * ``comparison.md``: privacy (balanced accuracy) and utility, mean over seeds;
    * ``leakage.csv``: every leakage-audit result per seed (with provenance columns);
    * ``leakage_cells.csv``/``leakage_methods.csv``: its seed means per method x attribute x
      attacker x protocol, and one summary line per method (with its runs' provenance);
    * ``leakage.md``: both, with the protocol in the header.

    Args:
        rows: Every (row, seed) result.
        out: The report directory.
        context: :func:`~.runner.describe` of the run.

    Returns:
        The Markdown text of ``comparison.md`` followed by that of ``leakage.md``.
    """
    privacy, utility = tables(rows)
    env = provenance_frame(rows)
    out.mkdir(parents=True, exist_ok=True)
    _with_provenance(privacy, env).to_csv(out / "privacy.csv", index=False)
    _with_provenance(utility, env).to_csv(out / "utility.csv", index=False)
    text = comparison_markdown(privacy, utility, env)
    (out / "comparison.md").write_text(text)
    leakage = leakage_frame(rows)
    _with_provenance(leakage, env).to_csv(out / "leakage.csv", index=False)
    leak_text, cells, methods = leakage_report(leakage, utility, context, env)
    cells.to_csv(out / "leakage_cells.csv", index=False)
    _aggregated_provenance(methods, env).to_csv(out / "leakage_methods.csv", index=False)
    (out / "leakage.md").write_text(leak_text)
    return f"{text}\n{leak_text}"


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
    """Log the per-seed tables and the Fig. 4 plots as one W&B run (honours WANDB_MODE)."""
    privacy, utility = tables(rows)
    frames = {"privacy": privacy, "utility": utility}
    leakage = leakage_frame(rows)
    if len(leakage):
        frames["leakage"] = leakage
    log_wandb_report(
        out,
        project=project,
        job_type="attribute_unlearning",
        config=config,
        tables=frames,
        images=sorted(out.glob("fig4_*.png")),
    )
