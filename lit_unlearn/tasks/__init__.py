"""LightningModules that wrap backbones: training, evaluation, unlearning steps."""

from lit_unlearn.tasks.classification import ClassificationTask
from lit_unlearn.tasks.recommendation import RecommenderTask

__all__ = ["ClassificationTask", "RecommenderTask"]
