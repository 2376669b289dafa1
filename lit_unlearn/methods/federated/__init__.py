"""User-level federated recommendation: clients, local objectives, server strategy, engines.

Math apart from glue: :mod:`.clients` (what a client holds), :mod:`.objectives` (its local
loss and extra terms), :mod:`.strategy` (aggregation), :mod:`.engine` (the in-process
research engine, plain PyTorch); :mod:`.task` is the Lightning glue.
"""

from lit_unlearn.methods.federated.clients import ClientData, PaddedExamples
from lit_unlearn.methods.federated.engine import ClientUpdate, InProcessEngine, RoundResult
from lit_unlearn.methods.federated.objectives import (
    ClientTerm,
    LocalLoss,
    MultinomialELBO,
    PointwiseBCE,
)
from lit_unlearn.methods.federated.strategy import Aggregator, FedAvg
from lit_unlearn.methods.federated.task import FederatedTask

__all__ = [
    "Aggregator",
    "ClientData",
    "ClientTerm",
    "ClientUpdate",
    "FedAvg",
    "FederatedTask",
    "InProcessEngine",
    "LocalLoss",
    "MultinomialELBO",
    "PaddedExamples",
    "PointwiseBCE",
    "RoundResult",
]
