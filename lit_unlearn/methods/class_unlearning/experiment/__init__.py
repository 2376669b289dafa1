"""The class-unlearning comparison (DSDA's Table 1 / Table 2, Fig. 3) in one command.

``python -m lit_unlearn.methods.class_unlearning.experiment --config <table YAML>`` trains one
Original per seed, then for every forgetting request Retrain and every method row (a method
config of ``configs/method/class_unlearning/`` plus the init_args it changes), audits each
model and writes ``results.csv``, ``summary.csv``, ``report.md`` (one table per request size
k, mean +- sd, the data each method needs), ``accuracy_time_k{k}.png`` (A_r against execution
time) and ``samples_{row}.png`` (synthetic samples per class of every synthesis method), and
logs them to W&B when asked. :mod:`.config` is the YAML schema, :mod:`.runner` the runs,
:mod:`.render` the report.
"""

from lit_unlearn.methods.class_unlearning.experiment.__main__ import main, parse_args
from lit_unlearn.methods.class_unlearning.experiment.config import (
    RowSpec,
    TableConfigError,
    TableSpec,
    data_needed,
    load_table,
)
from lit_unlearn.methods.class_unlearning.experiment.render import summarize, write_report
from lit_unlearn.methods.class_unlearning.experiment.runner import run_table

__all__ = [
    "RowSpec",
    "TableConfigError",
    "TableSpec",
    "data_needed",
    "load_table",
    "main",
    "parse_args",
    "run_table",
    "summarize",
    "write_report",
]
