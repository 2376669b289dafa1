"""The attribute-unlearning comparison table (AttrCloak Tables IV-VI, Fig. 4-5) in one command.

For one dataset and its attributes: train (or load) the recommender, then from the same
checkpoint run every row of a table YAML (AttrCloak-DD/DF, U2U-R, D2D-R, the fixed-alpha_u
ablation of Fig. 5, ...) and report for each: MLP and XGBoost attacker accuracy and balanced
accuracy per attribute (attackers trained on the shadow users of the *unlearned*
representation), HR/NDCG@5/10 under both ranking protocols, and the unlearning wall time.

* :mod:`.config`: the table YAML (rows = method configs of ``configs/method/attribute/`` plus
  overrides; callbacks built by jsonargparse as ``lit-unlearn fit`` builds them);
* :mod:`.runner`: the original model, every row and seed, evaluation;
* :mod:`.aggregate`: the privacy and utility DataFrames;
* :mod:`.render`: CSV + Markdown, Fig. 4-style plots, W&B;
* ``__main__``: ``python -m lit_unlearn.methods.attribute.experiment --config TABLE.yaml``.
"""

from lit_unlearn.methods.attribute.experiment.aggregate import mean_sd, tables
from lit_unlearn.methods.attribute.experiment.config import (
    RowSpec,
    TableConfigError,
    TableSpec,
    instantiate_callback,
    load_table,
)
from lit_unlearn.methods.attribute.experiment.render import (
    comparison_markdown,
    plot_distributions,
    write_tables,
)
from lit_unlearn.methods.attribute.experiment.runner import RowResult, TableRun, run_table

__all__ = [
    "RowResult",
    "RowSpec",
    "TableConfigError",
    "TableRun",
    "TableSpec",
    "comparison_markdown",
    "instantiate_callback",
    "load_table",
    "mean_sd",
    "plot_distributions",
    "run_table",
    "tables",
    "write_tables",
]
