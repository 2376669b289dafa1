"""The unlearning contract: what a task must offer so a method callback can take it over."""

from lit_unlearn.unlearning.base import UnlearningCallback

__all__ = ["UnlearningCallback"]
