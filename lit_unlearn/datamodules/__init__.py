"""Data sources, preprocessing, splits and the recommender DataModule (DD / DF modes)."""

from lit_unlearn.datamodules.containers import UserAttributes
from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.datamodules.recommendation import RecommendationData, UserIndex
from lit_unlearn.datamodules.sources.synthetic import Synthetic

__all__ = ["ForgettingData", "RecommendationData", "Synthetic", "UserAttributes", "UserIndex"]
