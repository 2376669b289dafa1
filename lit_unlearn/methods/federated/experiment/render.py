"""Turn a table's records into FedAU2's Table 1, Fig. 3 and Fig. 4: Markdown, CSV and PNG.

Protocols, as every number names them: ranking on each user's held-out **test** item (the
most recent interaction) of the model after the last round, ``sampled`` = against 99 fixed
sampled negatives (the paper's numbers imply it, spec decision 4), ``full`` = against every
item the user has not interacted with. Attribute inference: FedAU2's outside adversary (an MLP
with one hidden layer of 100, trained on the 20% shadow users, tested on the other 80%; for
FedRAP the per-column ensemble over the residual tables, App. A.2) with micro-F1, macro-F1
and balanced accuracy; the generic audit (MLP and XGBoost on the same split) as balanced
accuracy. Gradient attack: recovered-label accuracy of DLG and iDLG on the server's stored
latest uploads of the adversary head at ``gradient_at_round``. Means +- standard deviations
over the seeds (n in each row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lit_unlearn.methods.federated.experiment.spec import MethodSpec, TableSpec
from lit_unlearn.reporting.plots import pyplot, save_figure
from lit_unlearn.reporting.tables import markdown_table

__all__ = ["cell_metrics", "render", "summary_frame"]

_ATTACK_NAMES = {"dlg": "DLG", "idlg": "iDLG"}
_RANKING = {
    "HR@10 sampled": "test/sampled/hr@10",
    "NDCG@10 sampled": "test/sampled/ndcg@10",
    "HR@10 full": "test/full/hr@10",
    "NDCG@10 full": "test/full/ndcg@10",
}


def _attack(
    results: Sequence[Mapping[str, Any]], attribute: str, backbone: str
) -> Mapping[str, Any]:
    """The outside adversary's result on ``attribute`` (FedRAP: the per-column ensemble)."""
    rows = [r for r in results if r["attribute"] == attribute]
    preferred = [r for r in rows if r["attacker"] == "mlp-columns"] if backbone == "FedRAP" else []
    chosen = preferred or [r for r in rows if r["attacker"] == "mlp"]
    return chosen[0] if chosen else {}


def cell_metrics(record: Mapping[str, Any], attribute: str) -> dict[str, float]:
    """One run's numbers for one audited attribute (NaN where not measured)."""
    out: dict[str, float] = {
        name: float(record["test"].get(key, np.nan)) for name, key in _RANKING.items()
    }
    attacks = record.get("attacks") or {}
    # JSON turns the round keys into strings; a fresh record has ints.
    by_round = {int(r): v for r, v in attacks.items()}
    final = _attack(by_round[max(by_round)], attribute, record["backbone"]) if by_round else {}
    out["micro-F1"] = float(final.get("micro_f1", np.nan))
    out["macro-F1"] = float(final.get("macro_f1", np.nan))
    out["BAcc"] = float(final.get("balanced_accuracy", np.nan))
    for attacker in ("mlp", "xgboost"):
        hits = [
            a
            for a in record.get("audit", [])
            if a["attribute"] == attribute and a["attacker"] == attacker
        ]
        out[f"{attacker.upper()} BAcc"] = float(hits[0]["balanced_accuracy"]) if hits else np.nan
    for attack in ("dlg", "idlg"):
        hits = [g for g in record.get("gradient", []) if g.get("attack") == attack]
        same = record["attribute"] == attribute
        value = float(hits[0]["accuracy"]) if hits and same else np.nan
        out[f"{_ATTACK_NAMES[attack]} acc"] = value
    out["s/round"] = float(record.get("seconds_per_round", np.nan))
    return out


def _runs_for(
    records: Sequence[Mapping[str, Any]], backbone: str, method: MethodSpec, attribute: str
) -> list[Mapping[str, Any]]:
    mine = [r for r in records if r["backbone"] == backbone and r["method"] == method.name]
    if method.targets is not None and attribute not in method.targets:
        # Original / APM do not depend on the attribute (their head only observes): the run
        # of their one target serves every attribute's row.
        return mine
    return [r for r in mine if r["attribute"] == attribute]


def summary_frame(spec: TableSpec, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 1 as numbers: one row per (backbone, attribute, method), mean and sd columns."""
    rows = []
    for backbone in spec.backbones:
        for attribute, classes in spec.attributes.items():
            original: float | None = None
            for method in spec.methods:
                runs = _runs_for(records, backbone, method, attribute)
                if not runs:
                    continue
                frame = pd.DataFrame([cell_metrics(r, attribute) for r in runs])
                row: dict[str, Any] = {
                    "backbone": backbone,
                    "attribute": attribute,
                    "method": method.name,
                    "n": len(runs),
                    "chance": 1.0 / classes,
                }
                for col in frame.columns:
                    row[col] = float(frame[col].mean())
                    row[f"{col} sd"] = float(frame[col].std(ddof=1)) if len(frame) > 1 else np.nan
                if method.name == spec.methods[0].name:
                    original = row["HR@10 sampled"]
                row["HR@10 sampled vs first row (%)"] = (
                    100.0 * (row["HR@10 sampled"] / original - 1.0) if original else np.nan
                )
                rows.append(row)
    return pd.DataFrame(rows)


def _pm(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean +- sd strings for the Markdown table."""
    out = frame[["backbone", "attribute", "method", "n"]].copy()
    for col in columns:
        if col not in frame:
            continue
        means = frame[col].tolist()
        sds = frame[f"{col} sd"].tolist() if f"{col} sd" in frame else [np.nan] * len(frame)
        out[col] = [_pm_cell(m, s) for m, s in zip(means, sds, strict=True)]
    return out


def _pm_cell(mean: float, sd: float) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.3f}" if np.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def _untargeted_section(per_run: pd.DataFrame) -> str:
    """The attributes a run did not target (gender when unlearning age and vice versa)."""
    if per_run.empty:
        return ""
    other = per_run[per_run["target"] != per_run["audited"]]
    if other.empty:
        return ""
    cols = ["BAcc", "macro-F1", "MLP BAcc", "XGBOOST BAcc"]
    grouped = other.groupby(["backbone", "method", "target", "audited"], sort=False)[cols]
    means = grouped.mean().reset_index()
    means.insert(4, "n", grouped.size().to_numpy())
    return (
        "\n\nAttributes the run did not target (the head unlearned `target`; the attackers "
        "audited `audited`), means over seeds:\n\n" + markdown_table(means)
    )


def _plot_table1(frame: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None or frame.empty:
        return []
    attributes = list(dict.fromkeys(frame["attribute"]))
    fig, axes = plt.subplots(1, len(attributes), figsize=(5 * len(attributes), 4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes, strict=True):
        sub = frame[frame["attribute"] == attribute]
        for (backbone, method), row in sub.set_index(["backbone", "method"]).iterrows():
            ax.scatter(row["BAcc"], row["NDCG@10 sampled"], label=f"{backbone} {method}")
            ax.annotate(f"{backbone}\n{method}", (row["BAcc"], row["NDCG@10 sampled"]), fontsize=6)
        ax.axvline(float(sub["chance"].iloc[0]), color="grey", linestyle=":", label="chance")
        ax.set_xlabel(f"{attribute}: attacker balanced accuracy")
        ax.set_ylabel("NDCG@10 (sampled, test)")
        ax.set_title(f"privacy / utility, {attribute}")
    fig.tight_layout()
    return [save_figure(fig, out / "table1.png")]


def _curves(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        base = {k: r[k] for k in ("backbone", "method", "attribute", "seed")}
        for rnd, results in (r.get("attacks") or {}).items():
            hit = _attack(results, r["attribute"], r["backbone"])
            if hit:
                value = float(hit["balanced_accuracy"])
                rows.append({**base, "round": int(rnd), "metric": "BAcc", "value": value})
        for point in r.get("curve") or []:
            if "val/sampled/ndcg@10" in point:
                value = float(point["val/sampled/ndcg@10"])
                metric = "NDCG@10 (val, sampled)"
                rows.append(
                    {**base, "round": int(point["round"]), "metric": metric, "value": value}
                )
    return pd.DataFrame(rows)


def _plot_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None or curves.empty:
        return []
    paths = []
    for (backbone, attribute), sub in curves.groupby(["backbone", "attribute"]):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric in zip(axes, ["BAcc", "NDCG@10 (val, sampled)"], strict=True):
            part = sub[sub["metric"] == metric]
            for method, m in part.groupby("method", sort=False):
                mean = m.groupby("round")["value"].mean()
                ax.plot(mean.index, mean.values, marker="o", label=str(method))
            ax.set_xlabel("round")
            ax.set_ylabel(metric)
            ax.legend(fontsize=7)
        fig.suptitle(f"{backbone}, {attribute}")
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"fig3_{backbone}_{attribute}.png"))
    return paths


def _plot_gradient(frame: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()
    if plt is None or frame.empty:
        return []
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(frame)), 4))
    # One word per line: "DSVAE lambda=16" beside its neighbours overlapped on one line.
    labels = [
        "\n".join([b, *str(m).split()])
        for b, m in zip(frame["backbone"], frame["method"], strict=True)
    ]
    x = np.arange(len(frame))
    ax.bar(x - 0.2, frame["DLG acc"], 0.4, label="DLG")
    ax.bar(x + 0.2, frame["iDLG acc"], 0.4, label="iDLG")
    ax.axhline(float(frame["chance"].iloc[0]), color="grey", linestyle=":", label="chance")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("recovered-label accuracy")
    ax.legend()
    fig.tight_layout()
    return [save_figure(fig, out / "fig4_gradient.png")]


def render(spec: TableSpec, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write the table's Markdown, CSVs and PNGs under ``spec.out``; return the files."""
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    per_run = pd.DataFrame(
        [
            {
                "backbone": r["backbone"],
                "method": r["method"],
                "target": r["attribute"],
                "seed": r["seed"],
                "audited": a,
                **cell_metrics(r, a),
            }
            for r in records
            for a in spec.attributes
        ]
    )
    per_run.to_csv(out / "runs.csv", index=False)
    frame = summary_frame(spec, records)
    frame.to_csv(out / "summary.csv", index=False)
    header = [f"# FedAU2 {spec.kind} ({spec.source})", "", (__doc__ or "").split("\n\n")[1], ""]
    files = [out / "runs.csv", out / "summary.csv"]
    if spec.kind == "table1":
        cols = ["HR@10 sampled", "NDCG@10 sampled", "HR@10 full", "NDCG@10 full", "macro-F1",
                "micro-F1", "BAcc", "MLP BAcc", "XGBOOST BAcc", "DLG acc", "iDLG acc",
                "HR@10 sampled vs first row (%)", "s/round"]  # fmt: skip
        body = markdown_table(_pm(frame, cols)) if not frame.empty else "(no finished run)"
        body += _untargeted_section(per_run)
        files += _plot_table1(frame, out)
    elif spec.kind == "curves":
        curves = _curves(records)
        curves.to_csv(out / "curves.csv", index=False)
        files.append(out / "curves.csv")
        cols = ["BAcc", "NDCG@10 sampled", "HR@10 sampled", "MLP BAcc", "XGBOOST BAcc", "s/round"]
        body = markdown_table(_pm(frame, cols)) if not frame.empty else "(no finished run)"
        files += _plot_curves(curves, out)
    else:
        targeted = frame.dropna(subset=["DLG acc"]) if not frame.empty else frame
        cols = ["DLG acc", "iDLG acc", "BAcc", "NDCG@10 sampled"]
        body = markdown_table(_pm(targeted, cols)) if not targeted.empty else "(no finished run)"
        files += _plot_gradient(targeted, out)
    (out / "table.md").write_text("\n".join(header) + "\n" + body + "\n")
    files.append(out / "table.md")
    if spec.wandb_project:
        import os

        from lit_unlearn.reporting.tracking import log_wandb_report

        # Offline unless the caller chose (`wandb sync` later): tables run on machines
        # without network, where an online init would wait for a connection.
        os.environ.setdefault("WANDB_MODE", "offline")

        log_wandb_report(
            out,
            project=spec.wandb_project,
            job_type=f"fedau2_{spec.kind}",
            config={"table": str(spec.source), "seeds": list(spec.seeds)},
            tables={"summary": frame, "runs": per_run},
            images=[p for p in files if p.suffix == ".png"],
        )
    return files
