"""User-level federated recommendation: clients, local objectives, server strategy, engines.

Math apart from glue: :mod:`.clients` (what a client holds), :mod:`.objectives` (its local
loss and extra terms), :mod:`.strategy` (aggregation), :mod:`.engine` (the in-process
research engine, plain PyTorch), :mod:`.erasure` (the null-calibrated erasure after the last
round, from securely aggregated sums); :mod:`.task` is the Lightning glue.
"""

from typing import TYPE_CHECKING

from lit_unlearn.methods.federated.adversary import (
    AdversaryTerm,
    AttributeHead,
    UploadRecorder,
    gradient_reversal,
)
from lit_unlearn.methods.federated.apm import APMPerturbation
from lit_unlearn.methods.federated.clients import ClientData, PaddedExamples
from lit_unlearn.methods.federated.engine import ClientUpdate, InProcessEngine, RoundResult
from lit_unlearn.methods.federated.objectives import (
    ClientTerm,
    LocalLoss,
    MultinomialELBO,
    PointwiseBCE,
)
from lit_unlearn.methods.federated.strategy import Aggregator, FedAdam, FedAvg

if TYPE_CHECKING:
    from lit_unlearn.methods.federated.erasure import FederatedErasure
    from lit_unlearn.methods.federated.task import FederatedTask

__all__ = [
    "APMPerturbation",
    "AdversaryTerm",
    "Aggregator",
    "AttributeHead",
    "ClientData",
    "ClientTerm",
    "ClientUpdate",
    "FedAdam",
    "FedAvg",
    "FederatedErasure",
    "FederatedTask",
    "InProcessEngine",
    "LocalLoss",
    "MultinomialELBO",
    "PaddedExamples",
    "PointwiseBCE",
    "RoundResult",
    "UploadRecorder",
    "gradient_reversal",
]


def __getattr__(name: str) -> object:
    # The Lightning glue is imported on first use: a Flower node process loads the engine
    # without paying for lightning's import (seconds per message).
    if name == "FederatedTask":
        from lit_unlearn.methods.federated.task import FederatedTask

        return FederatedTask
    if name == "FederatedErasure":
        from lit_unlearn.methods.federated.erasure import FederatedErasure

        return FederatedErasure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
