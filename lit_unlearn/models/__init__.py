"""Recommender backbones: plain ``nn.Module`` s sharing the :class:`Recommender` interface.

Importing this package is cheap: :mod:`lit_unlearn.models.lightgcn` imports ``torch_geometric``
only when a :class:`LightGCN` is constructed.
"""

from lit_unlearn.models.base import Recommender
from lit_unlearn.models.enmf import ENMF
from lit_unlearn.models.fedrap import FedRAP
from lit_unlearn.models.lightgcn import LightGCN
from lit_unlearn.models.mf import MF
from lit_unlearn.models.multvae import MultVAE
from lit_unlearn.models.ncf import NCF

__all__ = ["ENMF", "MF", "NCF", "FedRAP", "LightGCN", "MultVAE", "Recommender"]
