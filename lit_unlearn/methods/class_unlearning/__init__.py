"""Class unlearning in image classifiers: forget whole classes of a trained model.

The substrate (shared layers): the task :class:`~lit_unlearn.tasks.ClassificationTask`, the
backbones :mod:`lit_unlearn.models.classifiers`, the data
:class:`~lit_unlearn.datamodules.ClassificationData` (forget classes, data-dependent and
source-free modes) and the audit :class:`~lit_unlearn.attacks.class_audit.ClassAudit`
(A_r, A_f, MIA). This family holds the methods: Retrain is plain training with
``data.train_on: retain``; :mod:`.finetune` continues on the retain classes. Math for the
source-free methods: :mod:`.synthesis` (EGDS / AEGDS Langevin sampling from the classifier,
DSDA stage 1) and :mod:`.damo` (L_R, L_F, L_Disc); :mod:`.dsda` is the source-free method
(synthesis + DAMO with :class:`~lit_unlearn.optim.ConflictAverse`); :mod:`.ssd` is the SSD
baseline (needs D and D_f), :mod:`.unsir` UNSIR (error-maximising noise; needs D_r) and
:mod:`.gkt` GKT (zero-shot: generator + band-pass gate; source-free). The comparison tables
(DSDA's Table 1 / Table 2 / Fig. 3 with every method row): :mod:`.experiment`.
"""

from lit_unlearn.methods.class_unlearning.dsda import DSDA
from lit_unlearn.methods.class_unlearning.finetune import FineTune
from lit_unlearn.methods.class_unlearning.gkt import GKT
from lit_unlearn.methods.class_unlearning.ssd import SSD
from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler
from lit_unlearn.methods.class_unlearning.unsir import UNSIR

__all__ = ["DSDA", "GKT", "SSD", "UNSIR", "FineTune", "LangevinSampler"]
