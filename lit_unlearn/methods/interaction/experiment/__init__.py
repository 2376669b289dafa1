"""The AltEraser comparison (paper 003, Tables 3-5) in one command, from YAML configs.

For one dataset and scenario: train the original ENMF model on ``D_a``, then every row of the
experiment YAML from its ``lit-unlearn fit`` method config (``configs/method/interaction/``):
in the shipped table (``configs/experiment/interaction/alteraser_ml100k_table.yaml``) Retrain
and Retrain* (same initialisation, another training order) on ``D_r``, warm-start fine-tuning,
AltEraser with the AdamW, HF-Newton and AH-Newton block solvers from the original checkpoint,
and AH-Newton with the line-search extrapolation between passes ("+ELS", not in the paper).
For each model, over the forgetting users: re-predict score on ``D_f``, RBO@10/20/50 of their
top-k lists against Retrain's, Recall/NDCG@10/20/50 on their test items, the training or
unlearning time (Lightning ``Timer``, training loop only: data set-up is shared by all rows and
excluded) and the speed-up over Retrain. Several repetitions re-draw the split and the request;
quality columns are means, times medians.

Usage::

    python -m lit_unlearn.methods.interaction.experiment \\
        --config configs/experiment/interaction/alteraser_ml100k_table.yaml \\
        --scenario noise --repeats 5 --out runs/alteraser_ml100k_noise

Repetitions can be spread over invocations (``--seed 3 --repeats 2``) and reported together:
``--merge a/results.csv b/results.csv --config <the same YAML> --out merged`` rebuilds the
tables without training.

Every finished (seed, method) row is appended to ``<out>/rows.jsonl`` at once, with its model,
top-k lists and the request exported under ``<out>/exports/`` (raw dataset ids); a killed run
resumes where it stopped when started again with the same config and ``--out`` (``--fresh``
starts over). Recall/NDCG@10 come with 95% bootstrap intervals over users, and so does each
method's paired difference from Retrain. docs/alteraser.md, "Output directory", lists the files.

Modules: :mod:`.config` (the experiment YAML and its rows), :mod:`.runner` (training and
evaluation, the command), :mod:`.store` (rows.jsonl, resume, exports), :mod:`.aggregate`
(means, medians, speed-ups, ``--merge``), :mod:`.bootstrap` (confidence intervals),
:mod:`.provenance` (torch, threads, device, machine, command), :mod:`.render` (report.md
through :mod:`lit_unlearn.reporting`).
"""

from lit_unlearn.methods.interaction.experiment.aggregate import aggregate, merge
from lit_unlearn.methods.interaction.experiment.bootstrap import bootstrap_ci, confidence_table
from lit_unlearn.methods.interaction.experiment.config import (
    BACKBONE,
    KS,
    ORIGINAL,
    REFERENCE,
    ExperimentConfig,
    ExperimentConfigError,
    Row,
    instantiate_callbacks,
    load_experiment,
)
from lit_unlearn.methods.interaction.experiment.render import write_report
from lit_unlearn.methods.interaction.experiment.runner import main, parse_args, run, run_once
from lit_unlearn.methods.interaction.experiment.store import ResumeError, RunStore

__all__ = [
    "BACKBONE",
    "KS",
    "ORIGINAL",
    "REFERENCE",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ResumeError",
    "Row",
    "RunStore",
    "aggregate",
    "bootstrap_ci",
    "confidence_table",
    "instantiate_callbacks",
    "load_experiment",
    "main",
    "merge",
    "parse_args",
    "run",
    "run_once",
    "write_report",
]
