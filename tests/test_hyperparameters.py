"""Hyperparameters are validated in ``__init__``: NaN, inf, out-of-range, reversed bounds.

Issue 22, class 3: ``lr=nan``, ``shrinkage=nan`` and reversed ``df_bounds`` used to be accepted
(``lr <= 0`` is False for NaN), and the run started and wrote NaN or exploding weights. Every
task, method, backbone and solver must refuse them with a ValueError naming the parameter.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import pytest

NAN, INF = math.nan, math.inf


def _mf() -> Any:
    from lit_unlearn.models import MF

    return MF(10, 10)


def _cnn() -> Any:
    from lit_unlearn.models.classifiers import SmallCNN

    return SmallCNN()


def _class(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


#: (class path, factory of the required arguments, parameter, bad values)
CASES: list[tuple[str, Callable[[], dict[str, Any]], str, list[Any]]] = []


def add(path: str, req: Callable[[], dict[str, Any]], param: str, *bad: Any) -> None:
    CASES.append((path, req, param, list(bad)))


def _params() -> dict[str, Any]:
    import torch

    return {"params": [torch.nn.Parameter(torch.zeros(2))]}


none: Callable[[], dict[str, Any]] = dict


def rec() -> dict[str, Any]:
    return {"model": _mf()}


def clf() -> dict[str, Any]:
    return {"model": _cnn()}


def mf() -> dict[str, Any]:
    return {"num_users": 10, "num_items": 10}


for p in ("lr",):
    add("lit_unlearn.tasks.RecommenderTask", rec, p, NAN, INF, 0.0, -1.0)
for p in ("weight_decay", "l2_reg"):
    add("lit_unlearn.tasks.RecommenderTask", rec, p, NAN, INF, -1.0)
add("lit_unlearn.tasks.RecommenderTask", rec, "num_negatives", 0, 1.5, True)
for p in ("lr", "gamma"):
    add("lit_unlearn.tasks.ClassificationTask", clf, p, NAN, INF, 0.0)
for p in ("weight_decay",):
    add("lit_unlearn.tasks.ClassificationTask", clf, p, NAN, -1.0)
add("lit_unlearn.tasks.ClassificationTask", clf, "momentum", NAN, -0.1, 1.5)
add("lit_unlearn.tasks.ClassificationTask", clf, "label_smoothing", NAN, 1.0)
add("lit_unlearn.methods.attribute.AttrCloak", none, "lr", NAN, INF, 0.0)
add("lit_unlearn.methods.attribute.AttrCloak", none, "shrinkage", NAN, INF, -1.0)
add(
    "lit_unlearn.methods.attribute.AttrCloak",
    none,
    "df_bounds",
    (1.0, 0.1),
    (NAN, 1.0),
    (0.0, 2.0),
    (0.5,),
)
add("lit_unlearn.methods.attribute.AttrCloak", none, "dd_bounds", (1.0, 0.0), (0.0, NAN))
for c in ("U2UR", "D2DR"):
    for p in ("distinguishability_weight", "regularization_weight"):
        add(f"lit_unlearn.methods.attribute.{c}", none, p, NAN, -1.0)
    add(f"lit_unlearn.methods.attribute.{c}", none, "lr", NAN, 0.0)
add("lit_unlearn.methods.attribute.U2UR", none, "num_pairs", 0)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "lr", NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "samples_per_class", 0)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "forget_cap_factor", NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "delta", NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "o_p", NAN, INF)
add("lit_unlearn.methods.class_unlearning.DSDA", none, "o_n", NAN, INF)
add("lit_unlearn.methods.class_unlearning.FineTune", none, "lr", NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.FineTune", none, "momentum", NAN, -0.5, 1.5)
add("lit_unlearn.methods.class_unlearning.FineTune", none, "weight_decay", NAN, -1.0)
for p in ("generator_lr", "student_lr", "temperature", "clip"):
    add("lit_unlearn.methods.class_unlearning.GKT", none, p, NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.GKT", none, "beta", NAN, -1.0)
add("lit_unlearn.methods.class_unlearning.GKT", none, "threshold", NAN, 1.5)
add("lit_unlearn.methods.class_unlearning.SSD", none, "alpha", NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.SSD", none, "lam", NAN, 0.0)
for p in ("noise_lr", "impair_lr", "repair_lr"):
    add("lit_unlearn.methods.class_unlearning.UNSIR", none, p, NAN, 0.0)
add("lit_unlearn.methods.class_unlearning.UNSIR", none, "noise_reg", NAN, -1.0)
add("lit_unlearn.methods.class_unlearning.UNSIR", none, "noise_share", NAN, -0.1, 1.5)
for p in ("step_size", "eta"):
    add("lit_unlearn.methods.class_unlearning.synthesis.LangevinSampler", none, p, NAN, 0.0)
add(
    "lit_unlearn.methods.class_unlearning.synthesis.LangevinSampler",
    none,
    "momentum",
    NAN,
    -0.1,
    1.5,
)
add(
    "lit_unlearn.methods.class_unlearning.synthesis.LangevinSampler", none, "noise_scale", NAN, -1.0
)
add("lit_unlearn.methods.interaction.AltEraser", none, "tol", NAN, -1.0)
add("lit_unlearn.methods.interaction.AltEraser", none, "max_step", NAN, 0.5)
add("lit_unlearn.methods.interaction.WarmStart", none, "lr", NAN, 0.0)
add("lit_unlearn.methods.interaction.WarmStart", none, "weight_decay", NAN, -1.0)
add("lit_unlearn.methods.interaction.RelativeEarlyStopping", none, "rel_delta", NAN, -1.0)
add("lit_unlearn.methods.interaction.RelativeEarlyStopping", none, "patience", -1)
add("lit_unlearn.methods.federated.strategy.FedAvg", none, "server_lr", NAN, 0.0)
add("lit_unlearn.methods.federated.objectives.MultinomialELBO", none, "beta", NAN, -1.0)
add("lit_unlearn.methods.federated.objectives.PointwiseBCE", none, "num_negatives", 0)
add("lit_unlearn.methods.federated.adversary.AdversaryTerm", none, "weight", NAN, -1.0)
add("lit_unlearn.methods.federated.adversary.AdversaryTerm", none, "grl_scale", NAN, -1.0)
add("lit_unlearn.methods.federated.adversary.AdversaryTerm", none, "lr", NAN, 0.0)
add("lit_unlearn.methods.federated.task.FederatedTask", rec, "lr", NAN, 0.0)
add("lit_unlearn.methods.federated.task.FederatedTask", rec, "fraction", NAN, 0.0, 1.5)
add("lit_unlearn.models.MF", mf, "init_std", NAN, 0.0)
add("lit_unlearn.models.MF", mf, "embedding_dim", 0)
for p in ("negative_weight", "reg"):
    add("lit_unlearn.models.ENMF", mf, p, NAN, -1.0)
add("lit_unlearn.models.ENMF", mf, "init_std", NAN, 0.0)
add("lit_unlearn.models.ENMF", mf, "dropout", NAN, 1.0)
for p in ("residual_init_std", "l1_global", "difference", "residual_l2"):
    add("lit_unlearn.models.FedRAP", mf, p, NAN, -1.0)
add("lit_unlearn.models.MultVAE", mf, "dropout", NAN, 1.0)
add("lit_unlearn.models.NCF", mf, "dropout", NAN, 1.0)
add("lit_unlearn.models.LightGCN", mf, "num_layers", -1)
add("lit_unlearn.models.classifiers.SmallCNN", none, "dropout", NAN, 1.0)
add("lit_unlearn.models.classifiers.VisionTransformer", none, "dropout", NAN, 1.0)
add("lit_unlearn.models.classifiers.VisionTransformer", none, "mlp_ratio", NAN, 0.0)
add("lit_unlearn.optim.block_solvers.AdamWBlock", none, "lr", NAN, 0.0)
add("lit_unlearn.optim.block_solvers.AdamWBlock", none, "weight_decay", NAN, -1.0)
for c in ("HFNewtonBlock", "AHNewtonBlock"):
    add(f"lit_unlearn.optim.block_solvers.{c}", none, "damping", NAN, -1.0)
    add(f"lit_unlearn.optim.block_solvers.{c}", none, "cg_tol", NAN, -1.0)
add("lit_unlearn.optim.ConflictAverse", none, "c", NAN, -1.0)
add("lit_unlearn.optim.ConflictAverse", none, "tol", NAN, -1.0)
add("lit_unlearn.optim.MGDA", none, "bounds", (1.0, 0.0), (NAN, 1.0), (-0.5, 1.0))
add("lit_unlearn.optim.MGDA", none, "tol", NAN, -1.0)
add(
    "lit_unlearn.optim.FixedWeights",
    lambda: {"weights": [0.5, 0.5]},
    "weights",
    [NAN, 1.0],
    [-1.0, 1.0],
    [INF, 1.0],
)
for p in ("damping", "cg_tol", "armijo", "cg_decay"):
    add("lit_unlearn.optim.newton.HessianFreeNewton", _params, p, NAN, -1.0)
add("lit_unlearn.divergence.DivergenceGuard", none, "max_abs_parameter", NAN, 0.0)
add("lit_unlearn.divergence.DivergenceGuard", none, "max_norm_growth", NAN, 0.5)
add("lit_unlearn.divergence.DivergenceGuard", none, "check_every_n_steps", 0)


@pytest.mark.parametrize(
    ("path", "required", "param", "bad"),
    [
        pytest.param(path, req, param, bad, id=f"{path.rsplit('.', 1)[1]}-{param}={bad!r}")
        for path, req, param, bads in CASES
        for bad in bads
    ],
)
def test_a_bad_hyperparameter_is_refused_in_init(
    path: str, required: Callable[[], dict[str, Any]], param: str, bad: Any
) -> None:
    with pytest.raises(ValueError, match=param):
        _class(path)(**{**required(), param: bad})


@pytest.mark.parametrize("path", sorted({path for path, *_ in CASES}))
def test_the_defaults_are_accepted(path: str) -> None:
    required = next(req for p, req, *_ in CASES if p == path)
    _class(path)(**required())
