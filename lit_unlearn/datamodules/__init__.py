"""Data sources, preprocessing, splits; recommender (DD / DF) and image-classification data."""

from lit_unlearn.datamodules.classification import ClassificationData
from lit_unlearn.datamodules.containers import UserAttributes
from lit_unlearn.datamodules.federated import FederatedData
from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.datamodules.recommendation import RecommendationData, UserIndex
from lit_unlearn.datamodules.sources.synthetic import Synthetic

__all__ = [
    "ClassificationData",
    "FederatedData",
    "ForgettingData",
    "RecommendationData",
    "Synthetic",
    "UserAttributes",
    "UserIndex",
]
