"""MLP attribute attacker in plain PyTorch.

The attacker the attribute-unlearning papers use next to XGBoost (AttrCloak, FedAU2): a small
ReLU network trained with Adam and cross-entropy on the shadow users' embeddings. Two details
make its numbers meaningful:

* **class-balanced loss** (sklearn's "balanced" weights) so that on a skewed attribute it cannot
  score well by predicting the majority class;
* **early stopping on a validation part of the shadow set** (class-balanced loss by default,
  or balanced accuracy), keeping the best weights; the test users are never looked at before
  the final score.

All randomness (initialisation, batch order) comes from a private :class:`torch.Generator`
seeded with ``seed`` inside :func:`torch.random.fork_rng`, so the same embeddings always give
the same attacker and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from lit_unlearn.attacks.base import Attacker, balanced_class_weights
from lit_unlearn.attacks.scores import balanced_accuracy

__all__ = ["MLPAttacker"]


@contextlib.contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLPAttacker(Attacker):
    """Multi-layer perceptron attribute attacker.

    Args:
        hidden: Width of the hidden layers.
        layers: Number of linear layers in total (3: ``in -> hidden -> hidden -> classes``;
            1 is multinomial logistic regression).
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2), a mild regulariser for small shadow sets.
        max_epochs: Upper bound on passes over the shadow-train users.
        batch_size: Minibatch size; a value >= the number of training users is full-batch.
        patience: Epochs without validation improvement before stopping.
        class_weight: ``"balanced"`` weights the loss by inverse class frequency; ``"none"``
            uses the plain loss.
        monitor: Validation quantity for early stopping and best-weight selection: ``"loss"``
            (cross-entropy balanced over the validation users' classes) or
            ``"balanced_accuracy"`` (ties broken by the loss). The loss is the default: on the
            small validation parts of real shadow sets (~40 users on ML-100K) balanced accuracy
            is so noisy that it peaks by chance early and stops training too soon; on planted
            Gaussian data the loss gave 0.01-0.04 higher test balanced accuracy.
        seed: Seed of initialisation and batch order.
        device: Torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        num_threads: CPU threads for training and prediction (the process setting is restored
            afterwards). The matrices are tiny, so one thread is fastest (intra-op threads only
            add synchronisation, badly so on a busy machine), and a fixed count keeps CPU results
            independent of the machine's core count.
    """

    name = "mlp"

    def __init__(
        self,
        hidden: int = 100,
        layers: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 200,
        batch_size: int = 256,
        patience: int = 20,
        class_weight: Literal["balanced", "none"] = "balanced",
        monitor: Literal["loss", "balanced_accuracy"] = "loss",
        seed: int = 0,
        device: str = "cpu",
        num_threads: int = 1,
    ) -> None:
        super().__init__()
        for arg, value, low in (
            ("hidden", hidden, 1),
            ("layers", layers, 1),
            ("max_epochs", max_epochs, 1),
            ("batch_size", batch_size, 1),
            ("patience", patience, 1),
            ("num_threads", num_threads, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', got {class_weight!r}")
        if monitor not in ("balanced_accuracy", "loss"):
            raise ValueError(f"monitor must be 'balanced_accuracy' or 'loss', got {monitor!r}")
        self.hidden = hidden
        self.layers = layers
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.class_weight = class_weight
        self.monitor = monitor
        self.seed = seed
        self.device = str(torch.device(device))
        self.num_threads = num_threads
        self.model_: nn.Sequential | None = None
        self.logit_mask_: Tensor | None = None
        self.epochs_: int = 0
        self.best_epoch_: int = -1

    def _build(self, dim: int, num_classes: int, generator: torch.Generator) -> nn.Sequential:
        widths = [dim] + [self.hidden] * (self.layers - 1) + [num_classes]
        modules: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            linear = nn.Linear(fan_in, fan_out, dtype=torch.float32)
            # nn.Linear's default init, but drawn from our generator so the attacker is a
            # function of `seed` alone, whatever the caller did to the global RNG.
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
            modules.append(linear)
            if i < len(widths) - 2:
                modules.append(nn.ReLU())
        return nn.Sequential(*modules)

    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        device = torch.device(self.device)
        # fork_rng(devices=[]) restores the CPU RNG the Linear constructors consume; nothing
        # here draws from a CUDA generator. Gradients are switched back on because callers
        # may sit in no_grad / inference_mode (Lightning's test loop does).
        with (
            torch.random.fork_rng(devices=[]),
            _torch_threads(self.num_threads),
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            generator = torch.Generator().manual_seed(self.seed)
            model = self._build(X.shape[1], num_classes, generator).to(device)
            self.model_ = model
            # A class the shadow users never show cannot be learnt; masking its logit keeps it
            # at probability 0 instead of whatever its untrained output happens to be.
            mask = np.where(np.bincount(y, minlength=num_classes) > 0, 0.0, -np.inf)
            self.logit_mask_ = torch.as_tensor(mask, dtype=torch.float32, device=device)
            self._train(model, X, y, X_val, y_val, num_classes, generator, device)

    def _train(
        self,
        model: nn.Sequential,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        num_classes: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
        yt = torch.as_tensor(y, dtype=torch.long, device=device)
        Xv = torch.as_tensor(X_val, dtype=torch.float32, device=device)
        yv = torch.as_tensor(y_val, dtype=torch.long, device=device)
        weight: Tensor | None = None
        val_weight: Tensor | None = None
        if self.class_weight == "balanced":
            weight = torch.as_tensor(balanced_class_weights(y, num_classes), dtype=torch.float32)
            weight = weight.to(device)
            if y_val.size:
                # The validation loss is balanced over the validation users' own classes, so
                # early stopping targets the same class-balanced objective.
                vw = balanced_class_weights(y_val, num_classes)
                val_weight = torch.as_tensor(vw, dtype=torch.float32, device=device)
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        val_loss_fn = nn.CrossEntropyLoss(weight=val_weight)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        assert self.logit_mask_ is not None
        mask = self.logit_mask_
        n = Xt.shape[0]
        batch = min(self.batch_size, n)
        best: tuple[float, ...] | None = None
        best_state: dict[str, Tensor] | None = None
        bad_epochs = 0
        self.epochs_ = 0
        self.best_epoch_ = -1
        for epoch in range(self.max_epochs):
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                loss = loss_fn(model(Xt[idx]) + mask, yt[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self.epochs_ = epoch + 1
            if yv.numel() == 0:
                continue
            model.eval()
            with torch.no_grad():
                logits = model(Xv) + mask
                val_loss = float(val_loss_fn(logits, yv))
            if not math.isfinite(val_loss):
                val_loss = math.inf
            if self.monitor == "balanced_accuracy":
                pred = logits.argmax(dim=1).cpu().numpy()
                score: tuple[float, ...] = (balanced_accuracy(y_val, pred), -val_loss)
            else:
                score = (-val_loss,)
            if best is None or score > best:
                best, bad_epochs, self.best_epoch_ = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None and self.logit_mask_ is not None
        device = torch.device(self.device)
        with torch.no_grad(), _torch_threads(self.num_threads):
            X_t = torch.as_tensor(X, dtype=torch.float32, device=device)
            logits = self.model_(X_t) + self.logit_mask_
            return torch.softmax(logits.double(), dim=1).cpu().numpy()
