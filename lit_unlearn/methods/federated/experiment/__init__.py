"""FedAU2's tables and figures: run backbones x methods x attributes x seeds, render them.

``python -m lit_unlearn.methods.federated.experiment --config <table.yaml>`` (see
:mod:`.spec` for the config, :mod:`.runner` for what a cell records, :mod:`.render` for the
protocols of every number).
"""

from lit_unlearn.methods.federated.experiment.render import render, summary_frame
from lit_unlearn.methods.federated.experiment.runner import run_cell, run_table
from lit_unlearn.methods.federated.experiment.spec import (
    Cell,
    FederatedTableError,
    MethodSpec,
    TableSpec,
    load_table,
)

__all__ = [
    "Cell",
    "FederatedTableError",
    "MethodSpec",
    "TableSpec",
    "load_table",
    "render",
    "run_cell",
    "run_table",
    "summary_frame",
]
