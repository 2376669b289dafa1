"""GKT: zero-shot class unlearning by gated knowledge transfer (a source-free DSDA baseline).

Chundawat, Tarun, Mandal & Kankanhalli, "Zero-Shot Machine Unlearning", IEEE TIFS 2023 (the
source-free competitor of DSDA, paper 004, Table 1). No training image is read: a freshly
initialised student of the same architecture is distilled from the original model (the
teacher) on pseudo-samples of a generator, the data-free knowledge transfer of ZSKT (Micaelli &
Storkey, NeurIPS 2019), and a *band-pass filter* (the gate) keeps the forget classes from being
transferred: only pseudo-samples on which the teacher gives every forget class a probability
of at most ``threshold`` reach the student.

Per pseudo-batch (z ~ N(0, I), ``batch_size`` x ``z_dim``), as the authors' code does it:

1. one generator step maximising KL(T || S) on the gated samples of G(z) (the generator looks
   for inputs on which the student still disagrees with the teacher);
2. ``student_steps`` student steps minimising, on the gated samples of the updated G(z),

       KL(softmax(t / T) || softmax(s / T)) + beta * sum_l mean (a_s^l - a_t^l)^2,

   where a^l = normalise(mean_c (A^l)^2) is the attention map of layer l (Zagoruyko &
   Komodakis, ICLR 2017): the channel mean of the squared activations, flattened and L2
   normalised per sample.

Adam (lr 1e-3) for both, gradient norms clipped at 5, beta 250, T 1, threshold 0.01, 4000
pseudo-batches in the paper. Where 100 pseudo-batches in a row are gated away entirely the
generator is reset to its last snapshot (taken every 50 pseudo-batches), as in the authors'
code.

Choices where the paper and the code leave room (ours, documented):

* **KL scale**: the authors' (and ZSKT's) ``F.kl_div`` uses the element-wise mean, i.e.
  KL / K per sample, which is what beta = 250 was balanced against; ``kl_reduction="mean"``
  (default) keeps that, ``"batchmean"`` is the textbook per-sample KL.
* **Learning-rate schedule**: none. The authors step a ReduceLROnPlateau on the loss of the
  *real* retain test images, which a source-free method cannot see.
* **Student mode**: train mode (batch-norm statistics of the pseudo-samples, dropout on), as in
  ZSKT. (The authors' notebook leaves the student in eval mode after its first evaluation, so
  there BN never updates its running statistics; that is an accident, not the method.)
* **Attention layers**: the outputs of the backbone's top-level blocks, found by
  :func:`default_attention_layers` (SmallCNN: the ReLU ending each conv block; CifarResNet18:
  ``layer1`` .. ``layer4``, ZSKT's "groups"). A ViT has no spatial maps after its patch
  embedding, so no layer is found and the attention term is off (beta has no effect): the
  transfer is then the KL alone.
* **Generator**: ZSKT's (linear -> 128 x s/4 x s/4, BN, two upsample-conv-BN-LeakyReLU blocks,
  conv, affine BN) sized by the image shape, with its last BN followed by a tanh mapped onto
  the valid normalised pixel range, so every pseudo-sample is an image in [0, 1] once
  de-normalised.

CPU-sized default: 200 pseudo-batches (paper: 4000); the numbers it reaches on digits are in
the :class:`GKT` docstring.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.tasks.classification import ClassificationTask
from lit_unlearn.unlearning.base import UnlearningCallback

__all__ = [
    "GKT",
    "ActivationRecorder",
    "Generator",
    "attention_loss",
    "attention_map",
    "default_attention_layers",
    "forget_gate",
    "kl_divergence",
    "reinitialise",
]

KLReduction = Literal["mean", "batchmean"]

# Nonlinearities that end a conv block inside a flat stack of layers (SmallCNN.conv).
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


# ---------------------------------------------------------------------- losses and the gate
def attention_map(activation: Tensor) -> Tensor:
    """Spatial attention map of a feature map (Zagoruyko & Komodakis 2017).

    Args:
        activation: ``[B, C, H, W]`` activations.

    Returns:
        ``[B, H * W]``: the channel mean of the squared activations, flattened and divided by
        its L2 norm per sample (an all-zero map stays zero).

    Raises:
        ValueError: ``activation`` is not 4-D.
    """
    if activation.dim() != 4:
        raise ValueError(f"attention maps need [B, C, H, W] activations, got {activation.shape}")
    return F.normalize(activation.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Sum over layers of the mean squared difference of the attention maps (ZSKT's form).

    Raises:
        ValueError: The two lists differ in length, or there is no layer.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"need as many student as teacher maps (>= 1), got {len(student)} and {len(teacher)}"
        )
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total


def kl_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    reduction: KLReduction = "mean",
) -> Tensor:
    """Forward KL(softmax(t / T) || softmax(s / T)).

    Args:
        student_logits: ``[B, K]``.
        teacher_logits: ``[B, K]``.
        temperature: Softmax temperature T.
        reduction: ``mean`` (element-wise mean, KL / K per sample: the authors' and ZSKT's
            ``F.kl_div`` default) or ``batchmean`` (mean per-sample KL).
    """
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    per_sample = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    scale = 1.0 if reduction == "batchmean" else 1.0 / student_logits.shape[1]
    return per_sample.mean() * scale


def forget_gate(teacher_logits: Tensor, forget_classes: Tensor, threshold: float) -> Tensor:
    """GKT's band-pass filter: which samples the teacher gives every forget class p <= threshold.

    Args:
        teacher_logits: ``[B, K]`` logits of the original model.
        forget_classes: int64 indices of C_f.
        threshold: Largest forget-class probability a kept sample may have.

    Returns:
        bool ``[B]``: True for the samples that may be transferred to the student.
    """
    probs = torch.softmax(teacher_logits.detach().float(), dim=1)[:, forget_classes]
    return (probs <= threshold).all(dim=1)


# ---------------------------------------------------------------------- generator
class Generator(nn.Module):
    """ZSKT / GKT generator: z -> an image inside the valid normalised pixel range.

    ``Linear(z_dim, width * h0 * w0)`` (h0 = ceil(H / 4)), BN, then twice
    ``upsample -> conv3x3 -> BN -> LeakyReLU(0.2)`` (to 2 h0, then to exactly H x W; widths
    ``width`` and ``width / 2``), a conv3x3 to C channels and an affine BN (ZSKT's last layer),
    mapped by ``low + (high - low) (tanh + 1) / 2`` onto the per-channel valid range. Works for
    any image size (8x8 digits: 2 -> 4 -> 8; MNIST 7 -> 14 -> 28; CIFAR 8 -> 16 -> 32).

    Args:
        image_shape: ``(C, H, W)`` of the images to generate.
        low: ``[C]`` smallest valid normalised value per channel ((0 - mean) / std).
        high: ``[C]`` largest valid normalised value per channel ((1 - mean) / std).
        z_dim: Dimension of the latent z.
        width: Channels of the first feature map (ZSKT: 128).

    Raises:
        ValueError: Bad shape, bounds or sizes.
    """

    low: Tensor
    high: Tensor

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        low: Tensor,
        high: Tensor,
        z_dim: int = 128,
        width: int = 128,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of positive sizes, got {image_shape}")
        c, h, w = (int(s) for s in image_shape)
        if low.shape != (c,) or high.shape != (c,) or bool((high <= low).any()):
            raise ValueError(f"need low < high of shape ({c},), got {low} and {high}")
        if z_dim < 1 or width < 2:
            raise ValueError(f"need z_dim >= 1 and width >= 2, got {z_dim} and {width}")
        self.image_shape = (c, h, w)
        self.z_dim = z_dim
        h0, w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.start = (width, h0, w0)
        self.fc = nn.Linear(z_dim, width * h0 * w0)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(size=(2 * h0, 2 * w0)),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(size=(h, w)),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, c, 3, padding=1),
            nn.BatchNorm2d(c, affine=True),
        )
        self.register_buffer("low", low.detach().float().clone().view(1, c, 1, 1))
        self.register_buffer("high", high.detach().float().clone().view(1, c, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        """``[B, C, H, W]`` normalised images from ``z`` ``[B, z_dim]``."""
        out = self.body(self.fc(z).view(z.shape[0], *self.start))
        return self.low + (self.high - self.low) * (torch.tanh(out) + 1) / 2


# ---------------------------------------------------------------------- intermediate maps
class ActivationRecorder:
    """Forward hooks keeping the latest output of named sub-modules of a model.

    Args:
        model: The network.
        names: ``named_modules`` names to record, in order.

    Raises:
        ValueError: A name is not a sub-module of ``model``.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules or n == ""]
        if unknown:
            raise ValueError(
                f"attention_layers {unknown} are not sub-modules of {type(model).__name__}; "
                f"top-level ones: {[n for n, _ in model.named_children()]}"
            )
        self.names = list(names)
        self.outputs: dict[str, Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = output

        return hook

    def maps(self) -> list[Tensor]:
        """The recorded outputs, in ``names`` order (4-D, else ``ValueError``)."""
        out = [self.outputs[n] for n in self.names]
        for n, t in zip(self.names, out, strict=True):
            if not isinstance(t, Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"attention layer {n!r} gives {shape}, not [B, C, H, W] maps")
        return out

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.outputs = {}


@torch.no_grad()
def default_attention_layers(model: nn.Module, image_shape: tuple[int, int, int]) -> list[str]:
    """The backbone's top-level blocks with 4-D outputs: where attention is transferred.

    A probe forward (eval mode, two zero images) finds which sub-modules output
    ``[B, C, H, W]`` maps. Of the model's direct children, single layers (a stem convolution,
    a batch norm, a ViT's patch embedding) are skipped; a child made of blocks (a ResNet
    stage) is taken whole; in a flat stack of layers (SmallCNN's ``conv``) the nonlinearities
    with 4-D outputs end the blocks and are taken. SmallCNN: ``conv.2``, ``conv.6`` (default
    widths); CifarResNet18: ``layer1`` .. ``layer4``; ViT: none.
    """
    shapes: dict[str, int] = {}
    named = dict(model.named_modules())

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                shapes[name] = output.dim()

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in named.items() if n]
    was = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(2, *image_shape, device=device))
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    layers: list[str] = []
    for name, child in model.named_children():
        subs = list(child.named_children())
        if shapes.get(name) != 4 or not subs:
            continue
        if all(not list(m.children()) for _, m in subs):  # a flat stack of layers
            ends = [
                f"{name}.{n}"
                for n, m in subs
                if isinstance(m, _ACTIVATIONS) and shapes.get(f"{name}.{n}") == 4
            ]
            layers += ends or [name]
        else:
            layers.append(name)
    return layers


@contextmanager
def _recording(model: nn.Module, names: Sequence[str]) -> Iterator[ActivationRecorder]:
    recorder = ActivationRecorder(model, names)
    try:
        yield recorder
    finally:
        recorder.remove()


def reinitialise(model: nn.Module) -> None:
    """Fresh weights: every sub-module's ``reset_parameters`` (leaves first), then the model's.

    The model's own ``reset_parameters`` (CifarResNet18's Kaiming scheme, ViT's truncated
    normal) runs last so it overrides the layers' defaults, as when the model is built.
    Batch-norm running statistics are reset too. Uses the global torch RNG.
    """
    for module in reversed(list(model.modules())):
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


# ---------------------------------------------------------------------- the method
class GKT(UnlearningCallback[ClassificationTask]):
    """GKT run once at fit start (run it with ``trainer.max_epochs: 0``).

    The loaded model becomes a frozen teacher (a copy, eval mode); the task's own backbone is
    re-initialised (seeded) and trained in place as the student, so the task ends as the
    unlearned model. Its input normalisation is kept. No training image is read: it works in
    ``source_free`` mode (and in ``data_dependent`` mode, where it ignores the data). In
    source-free mode the last gated pseudo-batch (de-normalised, labelled by the teacher) is
    attached as the DataModule's synthetic data, so Lightning has a training loader; a
    training step (``max_epochs > 0``) changes nothing and reports its cross-entropy.

    Measured on scikit-learn digits (the ``digits_cnn.yaml`` Original: SmallCNN, 30 epochs,
    Adam 1e-3; 200 pseudo-batches, seed 0, source-free), forget class 0 / 3 / 7: A_f 0
    everywhere; A_r 96.3 / 98.5 / 95.4% with the paper's generator (width 128; 115 s for class
    3 on one CPU thread) and 98.5 / 98.8 / 97.5% with ``generator_width=32`` (64 s; seeds 1, 2
    on class 3: 98.5, 98.5); entropy MIA 0.7 / 5.5 / 2.8% and 0.7 / 5.5 / 5.6%. Retrain: A_r
    99.7 / 99.4 / 99.4%, MIA 2.8 / 7.5 / 2.8%, 6-10 s. Without the gate (``threshold=1``) the
    student learns the forget class too (A_f 100%, MIA 82%). Digits are easy for a data-free
    student: the paper's CIFAR-10 A_r is 44%. The gate keeps 25-70% of the samples: the
    generator, chasing teacher-student disagreement, drifts towards the forget classes the
    student never learns.

    Args:
        checkpoint: The trained classifier to unlearn (the teacher).
        pseudo_batches: Pseudo-batches (generator step + ``student_steps`` student steps) that
            reach the student; the paper's 4000 is a GPU budget, 200 fits a CPU.
        batch_size: Pseudo-samples per batch, before the gate (paper: 256).
        z_dim: Latent dimension of the generator (paper: 128).
        generator_width: Channels of the generator's first map (ZSKT: 128).
        generator_lr: Adam learning rate of the generator.
        student_lr: Adam learning rate of the student.
        student_steps: Student steps per pseudo-batch (paper: 10).
        beta: Weight of the attention-transfer loss (paper: 250).
        temperature: Softmax temperature of the KL (paper: 1).
        threshold: Largest teacher probability of any forget class a pseudo-sample may have to
            reach the student (paper: 0.01; 1 disables the gate: plain ZSKT, which transfers
            the forget classes too).
        clip: Gradient-norm clip of both networks (paper: 5).
        kl_reduction: ``mean`` (the authors' element-wise mean, KL / K) or ``batchmean``.
        attention_layers: Sub-module names whose 4-D outputs are matched (None: the top-level
            blocks, :func:`default_attention_layers`; ``[]``: KL only).
        max_empty: Consecutive fully gated-away pseudo-batches after which the generator is
            reset to its last snapshot (the authors': 100).
        seed: Seed of the student's initialisation, the generator and the latents.
    """

    task_kind = ClassificationTask
    #: Source-free: neither D_r nor D_f is read.
    data_needed: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        checkpoint: str | None = None,
        pseudo_batches: int = 200,
        batch_size: int = 256,
        z_dim: int = 128,
        generator_width: int = 128,
        generator_lr: float = 1e-3,
        student_lr: float = 1e-3,
        student_steps: int = 10,
        beta: float = 250.0,
        temperature: float = 1.0,
        threshold: float = 0.01,
        clip: float = 5.0,
        kl_reduction: KLReduction = "mean",
        attention_layers: list[str] | None = None,
        max_empty: int = 100,
        seed: int = 0,
    ) -> None:
        if not (
            isinstance(student_lr, (int, float)) and math.isfinite(student_lr) and student_lr > 0
        ):
            # Checked before the base class sees it as "lr": the message names this parameter.
            raise ValueError(f"student_lr must be a finite number > 0, got {student_lr!r}")
        super().__init__(checkpoint=checkpoint, lr=student_lr)
        ints = {
            "pseudo_batches": pseudo_batches, "batch_size": batch_size, "z_dim": z_dim,
            "student_steps": student_steps, "max_empty": max_empty,
        }  # fmt: skip
        for name, value in {**ints, "generator_width": generator_width}.items():
            low = 2 if name == "generator_width" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        floats = {
            "generator_lr": generator_lr, "student_lr": student_lr, "temperature": temperature,
            "clip": clip,
        }  # fmt: skip
        for name, number in floats.items():
            if not (isinstance(number, (int, float)) and math.isfinite(number) and number > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {number!r}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
        if kl_reduction not in ("mean", "batchmean"):
            raise ValueError(f"kl_reduction must be 'mean' or 'batchmean', got {kl_reduction!r}")
        if attention_layers is not None and (
            isinstance(attention_layers, str)
            or not all(isinstance(n, str) and n for n in attention_layers)
        ):
            raise ValueError(
                f"attention_layers must be a list of module names, got {attention_layers!r}"
            )
        self.pseudo_batches, self.batch_size, self.z_dim = pseudo_batches, batch_size, z_dim
        self.generator_width = generator_width
        self.generator_lr, self.student_lr = float(generator_lr), float(student_lr)
        self.student_steps = student_steps
        self.beta, self.temperature, self.threshold = float(beta), float(temperature), threshold
        self.clip = float(clip)
        self.kl_reduction: KLReduction = kl_reduction
        self.attention_layers = None if attention_layers is None else list(attention_layers)
        self.max_empty = max_empty
        self.seed = seed
        #: Wall time of the whole transfer (teacher copy, student reset, training).
        self.seconds = 0.0
        #: Share of the generated samples the gate let through to the student steps.
        self.gate_fraction = 0.0
        #: Pseudo-batches drawn that the gate emptied (not counted in ``pseudo_batches``).
        self.empty_batches = 0
        #: Generator resets after ``max_empty`` empty pseudo-batches in a row.
        self.generator_resets = 0
        #: The layers whose attention was transferred (after discovery).
        self.layers: list[str] = []
        #: Mean student loss over the last 10% of the pseudo-batches.
        self.final_student_loss = math.nan
        #: The frozen original model the student was distilled from (after a run).
        self.teacher: nn.Module | None = None
        self._last_batch: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        task = pl_module
        assert isinstance(task, ClassificationTask)
        dm: Any = trainer.datamodule  # type: ignore[attr-defined]
        if not task.forget_classes:
            raise ValueError("GKT needs forget classes: set data.init_args.forget_classes")
        image_shape = tuple(int(s) for s in dm.image_shape)
        assert len(image_shape) == 3
        if not self.one_shot_done:  # a resumed fit restored the student GKT already made
            self.unlearn(task, (image_shape[0], image_shape[1], image_shape[2]))
            self.one_shot_done = True
        if getattr(dm, "mode", None) == "source_free":
            # Lightning asks for a training loader even with max_epochs 0: serve the last
            # gated pseudo-batch (the only "data" this method has seen).
            assert self._last_batch is not None
            dm.attach_synthetic(*self._last_batch)

    def unlearn(self, task: ClassificationTask, image_shape: tuple[int, int, int]) -> None:
        """Run GKT on ``task`` now (its backbone becomes the unlearned student).

        Callable without a Trainer: ``task`` must hold the trained weights, its input
        statistics and its forget classes (``task.attach_data(dm)``).

        Raises:
            ValueError: No forget classes, or bad attention layers.
            FloatingPointError: A loss became NaN / inf.
        """
        if not task.forget_classes:
            raise ValueError("GKT needs forget classes")
        start = time.perf_counter()
        device = task.device
        student = task.model
        teacher = copy.deepcopy(student).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        self.layers = (
            default_attention_layers(teacher, image_shape)
            if self.attention_layers is None
            else list(self.attention_layers)
        )
        use_at = self.beta > 0 and bool(self.layers)
        mean, std = task.input_mean.float(), task.input_std.float()
        low, high = (0 - mean) / std, (1 - mean) / std
        forget = torch.tensor(task.forget_classes, dtype=torch.int64, device=device)
        rng_devices: list[int] = []
        if device.type == "cuda":
            rng_devices = [torch.cuda.current_device() if device.index is None else device.index]
        was_training = student.training
        kept = seen = 0
        tail: list[float] = []
        tail_from = self.pseudo_batches - max(1, self.pseudo_batches // 10)
        self.empty_batches = self.generator_resets = 0
        with (
            torch.random.fork_rng(devices=rng_devices),
            _recording(teacher, self.layers if use_at else []) as t_rec,
            _recording(student, self.layers if use_at else []) as s_rec,
        ):
            torch.manual_seed(self.seed)
            reinitialise(student)
            params = [p for p in student.parameters()]
            for p in params:
                p.requires_grad_(True)
            generator = Generator(image_shape, low, high, self.z_dim, self.generator_width)
            generator.to(device).train()
            student.train()
            opt_g = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
            opt_s = torch.optim.Adam(params, lr=self.student_lr)
            snapshot = copy.deepcopy(generator.state_dict())
            done = empty = 0
            try:
                while done < self.pseudo_batches:
                    z = torch.randn(self.batch_size, self.z_dim, device=device)
                    # 1. generator step: maximise KL(T || S) on the gated samples.
                    x = generator(z)
                    t_logits = teacher(x)
                    self._check(t_logits, "teacher output", done)
                    mask = forget_gate(t_logits, forget, self.threshold)
                    if not bool(mask.any()):
                        empty += 1
                        self.empty_batches += 1
                        if empty == self.max_empty:  # the authors' remedy
                            generator.load_state_dict(snapshot)
                            self.generator_resets += 1
                        elif empty >= 2 * self.max_empty:
                            raise RuntimeError(
                                f"GKT: the gate removed every pseudo-sample of {empty} "
                                "pseudo-batches in a row, also after a generator reset: the "
                                "teacher gives a forget class more than threshold="
                                f"{self.threshold} everywhere the generator goes"
                            )
                        continue
                    empty = 0
                    loss_g = -kl_divergence(
                        student(x[mask]), t_logits[mask], self.temperature, self.kl_reduction
                    )
                    self._check(loss_g, "generator loss", done)
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    nn.utils.clip_grad_norm_(generator.parameters(), self.clip)
                    opt_g.step()
                    # 2. student steps on the gated samples of the updated generator.
                    with torch.no_grad():
                        x = generator(z)
                        t_logits = teacher(x)
                        t_maps = t_rec.maps() if use_at else []
                        mask = forget_gate(t_logits, forget, self.threshold)
                    seen += int(mask.numel())
                    kept += int(mask.sum())
                    if not bool(mask.any()):
                        self.empty_batches += 1
                        continue
                    x, t_logits = x[mask], t_logits[mask]
                    t_maps = [m[mask] for m in t_maps]
                    for _ in range(self.student_steps):
                        s_logits = student(x)
                        loss = kl_divergence(
                            s_logits, t_logits, self.temperature, self.kl_reduction
                        )
                        if use_at:
                            loss = loss + self.beta * attention_loss(s_rec.maps(), t_maps)
                        self._check(loss, "student loss", done)
                        opt_s.zero_grad(set_to_none=True)
                        loss.backward()
                        nn.utils.clip_grad_norm_(params, self.clip)
                        opt_s.step()
                    if done >= tail_from:
                        tail.append(float(loss.detach()))
                    done += 1
                    if done % 50 == 0:
                        snapshot = copy.deepcopy(generator.state_dict())
            finally:
                student.train(was_training)
                for p in student.parameters():
                    p.grad = None
        raw = (x.detach() * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
        self._last_batch = (raw, t_logits.argmax(1))
        self.gate_fraction = kept / max(seen, 1)
        self.final_student_loss = sum(tail) / max(len(tail), 1)
        self.seconds = time.perf_counter() - start

    @staticmethod
    def _check(value: Tensor, what: str, step: int) -> None:
        if not bool(torch.isfinite(value).all()):
            raise FloatingPointError(
                f"GKT: non-finite {what} at pseudo-batch {step}: lower the learning rates or "
                "beta (or check the teacher's weights)"
            )

    def training_step(
        self, task: ClassificationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        """GKT is done at fit start: a step (``max_epochs > 0``) only reports the student's
        cross-entropy on the batch."""
        with torch.no_grad():
            loss = task.task_loss(batch)
        task.track_loss("train/loss", loss)
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = {
            **super().state_dict(),
            "seconds": self.seconds,
            "gate_fraction": self.gate_fraction,
            "seed": self.seed,
        }
        if self._last_batch is not None:  # a resumed source-free fit still needs its loader
            state["last_batch"] = [t.detach().cpu() for t in self._last_batch]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.gate_fraction = float(state_dict.get("gate_fraction", 0.0))
        last = state_dict.get("last_batch")
        if last is not None:
            self._last_batch = (last[0], last[1])
