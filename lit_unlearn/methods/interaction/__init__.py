"""Interaction unlearning in recommenders: forget a batch of user-item interactions.

Math (plain torch, no Lightning):

* :mod:`.block_problem`: the exact per-row quadratics of the ENMF loss (AltEraser, paper 003,
  section 4.3) as Newton systems;
* :mod:`.metrics`: RBO of top-k lists against Retrain, re-predict score.

Glue (Lightning callbacks): :mod:`.alteraser` (the alternating passes), :mod:`.warm_start`
(fine-tuning on the remaining data), :mod:`.plateau` (relative early stopping).
Forgetting requests and their DataModule are data: :mod:`lit_unlearn.datamodules.forgetting`.
The block solvers (AH-Newton, HF-Newton, AdamW) are generic over a block protocol and live in
:mod:`lit_unlearn.optim.block_solvers`. The comparison (Tables 3-5): :mod:`.experiment`.
"""

from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.plateau import RelativeEarlyStopping
from lit_unlearn.methods.interaction.warm_start import WarmStart

__all__ = ["AltEraser", "RelativeEarlyStopping", "WarmStart"]
