"""The attribute-unlearning comparison table (AttrCloak Tables IV-VI, Fig. 4-5) in one command.

For one dataset and its attributes: train (or load) the recommender, then from the same
checkpoint run every row of a table YAML (AttrCloak-DD/DF, U2U-R, D2D-R, the fixed-alpha_u
ablation of Fig. 5, ...) and report for each: MLP and XGBoost attacker accuracy and balanced
accuracy per attribute (attackers trained on the shadow users of the *unlearned*
representation), the flip-aware leakage audit (logistic regression, MLP, XGBoost, kNN; shadow
and k-fold protocols; permutation-null floor), HR/NDCG@5/10 under both ranking protocols, and
the unlearning wall time. Every (row, seed) is appended to ``rows.jsonl`` as it finishes, with
its provenance and its exported representation, and a restart resumes from there.

* :mod:`.config`: the table YAML (rows = method configs of ``configs/method/attribute/`` plus
  overrides; callbacks built by jsonargparse as ``lit-unlearn fit`` builds them);
* :mod:`.runner`: the original model, every row and seed, evaluation and both audits;
* :mod:`.store`: ``rows.jsonl`` (resume) and the exported representations;
* :mod:`.aggregate`: the privacy, leakage and utility DataFrames;
* :mod:`.render`: CSV + Markdown, Fig. 4-style plots, W&B;
* ``__main__``: ``python -m lit_unlearn.methods.attribute.experiment --config TABLE.yaml``.
"""

from lit_unlearn.methods.attribute.experiment.aggregate import mean_sd, tables
from lit_unlearn.methods.attribute.experiment.config import (
    LeakageSpec,
    RowSpec,
    TableConfigError,
    TableSpec,
    instantiate_callback,
    load_table,
)
from lit_unlearn.methods.attribute.experiment.render import (
    comparison_markdown,
    leakage_report,
    plot_distributions,
    write_tables,
)
from lit_unlearn.methods.attribute.experiment.runner import RowResult, TableRun, run_table
from lit_unlearn.methods.attribute.experiment.store import ResultStore

__all__ = [
    "LeakageSpec",
    "ResultStore",
    "RowResult",
    "RowSpec",
    "TableConfigError",
    "TableRun",
    "TableSpec",
    "comparison_markdown",
    "instantiate_callback",
    "leakage_report",
    "load_table",
    "mean_sd",
    "plot_distributions",
    "run_table",
    "tables",
    "write_tables",
]
