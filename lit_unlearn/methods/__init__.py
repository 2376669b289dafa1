"""Unlearning methods, one package per family; each keeps its math apart from its Lightning glue.

* :mod:`~lit_unlearn.methods.attribute`: attribute unlearning on user representations
  (AttrCloak, U2U-R, D2D-R);
* :mod:`~lit_unlearn.methods.interaction`: interaction unlearning (AltEraser, warm start).

A family builds on the shared layers (data, models, tasks, optim, metrics, attacks, reporting)
and on the unlearning contract (:mod:`lit_unlearn.unlearning`); families never import each other.
"""
