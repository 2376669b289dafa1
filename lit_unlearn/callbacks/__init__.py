"""Lightning callbacks: unlearning methods that plug into a Trainer, and audits."""

from lit_unlearn.callbacks.attribute_audit import AttributeAudit

__all__ = ["AttributeAudit"]
