"""One reporting path for audits and experiments: tables, plots, loggers and W&B.

* :mod:`.tables`: Markdown, one rounding and missing-value rule (CSVs keep full precision);
* :mod:`.keys`: the metric-key scheme every logger and table uses;
* :mod:`.plots`: matplotlib on the Agg backend, optional (``pip install lit-unlearn[plots]``);
* :mod:`.tracking`: Lightning loggers and Weights & Biases runs (``WANDB_MODE=offline`` works).

Plain pandas/matplotlib/wandb: importing this package imports neither lightning nor torch.
"""

from lit_unlearn.reporting.keys import audit_key
from lit_unlearn.reporting.tables import MISSING, format_cell, markdown_table

__all__ = ["MISSING", "audit_key", "format_cell", "markdown_table"]
