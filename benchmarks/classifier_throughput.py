"""Image-classifier training throughput: ClassificationTask + ClassificationData against plain PyTorch.

Two contenders train the same backbone for one epoch in the same process:

* **plain**: the whole ``uint8`` image tensor on the device, a seeded permutation sliced into
  index batches, ``index_select`` -> ``.float() / 255`` -> per-channel normalisation -> forward
  -> cross-entropy -> ``zero_grad`` / ``backward`` / ``step``. No framework at all.
* **lit**: ``ClassificationTask(model)`` fitted on ``ClassificationData(source)`` by a bare
  ``lightning.Trainer`` (no logger, checkpoints, progress bar, summary or validation). Its
  batches are the same tensor-sliced gathers (:class:`TensorBatchLoader`, no per-sample
  collate) and the task normalises on the device exactly as the plain loop does.

Same weights at the start (same seed), same batch size, optimiser, normalisation statistics and
data order (the permutation ``ShardedIndexSampler`` draws for epoch 0), so the ratio lit/plain
isolates what the Lightning glue and our task/DataModule cost. Each side gets one short warm-up
fit first; then ``--repeats`` interleaved rounds (ABBA order) time one epoch each. "epoch" times
the training epoch only (a callback between ``on_train_epoch_start`` and
``on_train_epoch_end``; Trainer construction, loader construction, the task's own
``on_train_epoch_end`` (epoch-loss log, scheduler step) and teardown excluded);
"fit" times end to end (Trainer construction + ``fit``; for plain: model/data to the device,
optimiser construction and the epoch). Medians are reported.

Rows:

* CIFAR ResNet-18 (``CifarResNet18``, 11.2 M parameters) on ``uint8 [N, 3, 32, 32]`` images in
  10 classes: random pixels (seeded) by default, or the first N images of the real CIFAR-10
  train split with ``--cifar-root`` (the official python batches; nothing is downloaded). N
  defaults to 512 on CPU and 50 000 (a full CIFAR-10 epoch) on CUDA.
* SmallCNN on ``uint8 [N, 1, 8, 8]`` digits-shaped random images (8192 by default, batch 64): a
  step costs milliseconds, so this row is where per-step framework overhead shows.

Usage::

    python benchmarks/classifier_throughput.py                       # CPU, random CIFAR-shaped data
    python benchmarks/classifier_throughput.py --device cuda         # GPU: full CIFAR-10-sized epoch
    python benchmarks/classifier_throughput.py --cifar-root data/cifar --device auto

Writes ``benchmarks/results/classifier_throughput_<device>.{json,md}`` (``--out`` sets the
path stem).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._device import parse_device
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import CIFAR10
from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split
from lit_unlearn.models.classifiers import CifarResNet18, SmallCNN
from lit_unlearn.models.classifiers.base import Classifier
from lit_unlearn.tasks import ClassificationTask

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 10


# ---------------------------------------------------------------------------------- data
class InMemoryImages(ImageSource):
    """An :class:`ImageSource` serving one in-memory :class:`ImageSet` as its train split.

    ``test`` returns the same images: ClassificationData loads a test split (and checks that
    every class has images in it), but the benchmark never evaluates, so no second set is built
    and no test file is read.
    """

    def __init__(self, data: ImageSet, name: str) -> None:
        self.data = data
        self.name = name

    def load(self, split: Split) -> ImageSet:
        return self.data


def random_images(n: int, shape: tuple[int, int, int], seed: int) -> ImageSet:
    """``n`` seeded random ``uint8`` images of ``shape``, labels balanced over 10 classes."""
    if n < NUM_CLASSES:
        raise ValueError(f"need at least {NUM_CLASSES} images (one per class), got {n}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=gen)]
    names = tuple(str(c) for c in range(NUM_CLASSES))
    return ImageSet(images, labels, names, torch.arange(n))


def cifar10_images(root: str, n: int) -> ImageSet:
    """The first ``n`` images of the official CIFAR-10 train split (``download=False``)."""
    train = CIFAR10(root, download=False).load("train")
    if not NUM_CLASSES <= n <= len(train):
        raise ValueError(f"--images must lie in {NUM_CLASSES}..{len(train)} for CIFAR-10, got {n}")
    return train.subset(torch.arange(n))


# ---------------------------------------------------------------------------------- contenders
@dataclass
class Row:
    """One model/data configuration the two contenders train on."""

    name: str
    data_name: str
    build: Callable[[], Classifier]
    data: ImageSet
    batch_size: int
    optimizer: Literal["adam", "sgd"]
    lr: float
    repeats: int
    warmup_batches: int


def make_optimizer(row: Row, model: torch.nn.Module) -> torch.optim.Optimizer:
    """As ``ClassificationTask.configure_optimizers`` (momentum 0.9, no weight decay)."""
    if row.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=row.lr, momentum=0.9, weight_decay=0.0)
    return torch.optim.Adam(model.parameters(), lr=row.lr, weight_decay=0.0)


def fresh_model(row: Row, seed: int) -> Classifier:
    torch.manual_seed(seed)
    return row.build()


def plain_epoch(
    row: Row,
    model: torch.nn.Module,
    stats: tuple[Tensor, Tensor],
    device: torch.device,
    seed: int,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """One epoch of the plain loop.

    Returns:
        ``epoch_s`` (wall), ``epoch_cpu_s`` (this process's CPU time, all threads), ``fit_s``,
        ``step_s`` (wall time from one iteration's start to the next's; CPU only: on CUDA the
        host runs ahead of the device), ``mean_loss`` and ``steps``.
    """
    _sync(device)
    t_fit = time.perf_counter()
    model = model.to(device).train()
    images = row.data.images.to(device)
    labels = row.data.labels.to(device)
    mean = stats[0].to(device)[:, None, None]
    std = stats[1].to(device)[:, None, None]
    opt = make_optimizer(row, model)
    n = images.shape[0]
    _sync(device)
    c_epoch = time.process_time()
    t_epoch = time.perf_counter()
    # The permutation ShardedIndexSampler(shuffle=True, seed) draws for epoch 0.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    total = torch.zeros((), device=device)
    steps = 0
    marks: list[float] = []
    for start in range(0, n, row.batch_size):
        if max_batches is not None and steps >= max_batches:
            break
        marks.append(time.perf_counter())
        idx = perm[start : start + row.batch_size]
        x = images.index_select(0, idx).float() / 255.0
        x = (x - mean) / std
        y = labels.index_select(0, idx)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total = total + loss.detach()
        steps += 1
    _sync(device)
    end = time.perf_counter()
    cpu = time.process_time() - c_epoch
    return {
        "epoch_s": end - t_epoch,
        "epoch_cpu_s": cpu,
        "fit_s": end - t_fit,
        "step_s": _intervals(marks, end) if device.type == "cpu" else [],
        "mean_loss": float(total) / max(steps, 1),
        "steps": steps,
    }


def _intervals(marks: list[float], end: float) -> list[float]:
    bounds = [*marks, end]
    return [b - a for a, b in itertools.pairwise(bounds)]


class EpochTimer(pl.Callback):
    """Wall and CPU time of the training epoch (synchronised on CUDA), its step intervals."""

    def __init__(self) -> None:
        self.epoch_s = 0.0
        self.epoch_cpu_s = 0.0
        self.steps = 0
        self.marks: list[float] = []
        self.step_s: list[float] = []
        self._t0 = 0.0
        self._c0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.marks.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        end = time.perf_counter()
        self.epoch_cpu_s = time.process_time() - self._c0
        self.epoch_s = end - self._t0
        self.steps = trainer.global_step
        if pl_module.device.type == "cpu":
            self.step_s = _intervals(self.marks, end)


def lit_epoch(
    row: Row,
    model: Classifier,
    dm: ClassificationData,
    device: torch.device,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """One epoch of ClassificationTask under a bare Trainer; same keys as :func:`plain_epoch`."""
    task = ClassificationTask(model, optimizer=row.optimizer, lr=row.lr)
    timer = EpochTimer()
    _sync(device)
    t_fit = time.perf_counter()
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=max_batches if max_batches is not None else 1.0,
        callbacks=[timer],
    )
    trainer.fit(task, dm)
    _sync(device)
    end = time.perf_counter()
    loss = trainer.callback_metrics.get("train/loss_epoch")
    return {
        "epoch_s": timer.epoch_s,
        "epoch_cpu_s": timer.epoch_cpu_s,
        "fit_s": end - t_fit,
        "step_s": timer.step_s,
        "mean_loss": float(loss) if loss is not None else float("nan"),
        "steps": timer.steps,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(row: Row, device: torch.device, seed: int) -> dict[str, Any]:
    """Warm up both sides, then ``row.repeats`` interleaved (ABBA) epochs each."""
    dm = ClassificationData(InMemoryImages(row.data, row.data_name), batch_size=row.batch_size)
    dm.setup("fit")  # load + channel statistics once, outside every timer
    stats = dm.normalization()
    assert stats is not None
    sampler_seed = dm.seed  # ShardedIndexSampler seeds epoch e with seed + e; one epoch: e = 0

    def plain(max_batches: int | None = None) -> dict[str, Any]:
        return plain_epoch(row, fresh_model(row, seed), stats, device, sampler_seed, max_batches)

    def lit(max_batches: int | None = None) -> dict[str, Any]:
        return lit_epoch(row, fresh_model(row, seed), dm, device, max_batches)

    plain(row.warmup_batches)
    lit(row.warmup_batches)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "lit": []}
    threads_seen = set()
    for r in range(row.repeats):
        order = (("plain", plain), ("lit", lit)) if r % 2 == 0 else (("lit", lit), ("plain", plain))
        for side, fn in order:
            runs[side].append(fn())
            threads_seen.add(torch.get_num_threads())
        print(
            f"  {row.name} round {r + 1}/{row.repeats}: plain {runs['plain'][-1]['epoch_s']:.3f} s, "
            f"lit {runs['lit'][-1]['epoch_s']:.3f} s",
            flush=True,
        )
    n = len(row.data)
    steps = int(runs["plain"][0]["steps"])
    out: dict[str, Any] = {
        "model": row.name,
        "data": row.data_name,
        "images": n,
        "image_shape": list(row.data.image_shape),
        "batch_size": row.batch_size,
        "steps_per_epoch": steps,
        "optimizer": row.optimizer,
        "lr": row.lr,
        "parameters": sum(p.numel() for p in row.build().parameters()),
        "repeats": row.repeats,
        "warmup_batches": row.warmup_batches,
        "threads_during_runs": sorted(threads_seen),
    }
    for side in ("plain", "lit"):
        epoch = [x["epoch_s"] for x in runs[side]]
        cpu = [x["epoch_cpu_s"] for x in runs[side]]
        fit = [x["fit_s"] for x in runs[side]]
        step = [t for x in runs[side] for t in x["step_s"]]
        out[side] = {
            "epoch_s": epoch,
            "epoch_cpu_s": cpu,
            "fit_s": fit,
            "step_s": [x["step_s"] for x in runs[side]],
            "mean_loss": [x["mean_loss"] for x in runs[side]],
            "steps": [int(x["steps"]) for x in runs[side]],
            "median_epoch_s": statistics.median(epoch),
            "min_epoch_s": min(epoch),
            "median_epoch_cpu_s": statistics.median(cpu),
            "median_step_s": statistics.median(step) if step else None,
            "median_fit_s": statistics.median(fit),
            "images_per_s": n / statistics.median(epoch),
        }
    p, q = out["plain"], out["lit"]
    out["ratio"] = q["median_epoch_s"] / p["median_epoch_s"]
    # Views less sensitive to other processes' load (noise on a shared machine only adds time).
    out["ratio_min_epoch"] = q["min_epoch_s"] / p["min_epoch_s"]
    out["ratio_cpu_time"] = q["median_epoch_cpu_s"] / p["median_epoch_cpu_s"]
    out["ratio_median_step"] = (
        q["median_step_s"] / p["median_step_s"]
        if p["median_step_s"] and q["median_step_s"]
        else None
    )
    out["fit_ratio"] = q["median_fit_s"] / p["median_fit_s"]
    out["overhead_ms_per_step"] = 1e3 * (q["median_epoch_s"] - p["median_epoch_s"]) / max(steps, 1)
    out["max_abs_mean_loss_diff"] = max(
        abs(a - b) for a, b in zip(p["mean_loss"], q["mean_loss"], strict=True)
    )
    return out


# ---------------------------------------------------------------------------------- CLI
def device_arg(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else goes through ``parse_device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parse_device(name)


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["machine"] = f"{info['gpu']} (CUDA {info['cuda']}), host {cpu}"
    else:
        info["machine"] = f"CPU ({affinity} cores, {cpu})"
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--device", type=device_arg, default=torch.device("cpu"), help="cpu, cuda[:i] or auto"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="ResNet row: images per epoch (default 512 on CPU, 50000 on CUDA)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="ResNet row batch size")
    parser.add_argument(
        "--repeats", type=int, default=None, help="ResNet row: timed epochs per side (default 3)"
    )
    parser.add_argument(
        "--width", type=int, default=64, help="CifarResNet18 width (64 = the standard ResNet-18)"
    )
    parser.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="as the configs: Adam (ResNet lr 0.01, SmallCNN 1e-3); sgd: lr 0.1, momentum 0.9",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="override the ResNet row's learning rate"
    )
    parser.add_argument(
        "--warmup-batches",
        type=int,
        default=None,
        help="ResNet row: batches of the warm-up fit per side (default 1 on CPU, 20 on CUDA)",
    )
    parser.add_argument(
        "--cifar-root",
        default=None,
        help="folder holding cifar-10-batches-py/ (real CIFAR-10 instead of random pixels)",
    )
    parser.add_argument(
        "--small-images", type=int, default=8192, help="SmallCNN row: images per epoch"
    )
    parser.add_argument("--small-batch-size", type=int, default=64)
    parser.add_argument("--small-repeats", type=int, default=7)
    parser.add_argument("--small-warmup-batches", type=int, default=20)
    parser.add_argument("--skip-small", action="store_true", help="only the ResNet row")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the CPUs this process may use)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model init and random data")
    parser.add_argument(
        "--out",
        default=None,
        help="path stem of the .json/.md results (default benchmarks/results/classifier_throughput_<device>)",
    )
    args = parser.parse_args(argv)
    cuda = args.device.type == "cuda"
    if args.images is None:
        args.images = 50_000 if cuda else 512
    if args.repeats is None:
        args.repeats = 3
    if args.warmup_batches is None:
        args.warmup_batches = 20 if cuda else 1
    if (
        min(
            args.images,
            args.batch_size,
            args.repeats,
            args.small_images,
            args.small_batch_size,
            args.small_repeats,
        )
        < 1
    ):
        parser.error("sizes and repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lit_unlearn").setLevel(logging.WARNING)
    device: torch.device = args.device
    threads = args.threads or machine_info(torch.device("cpu"))["cpu_affinity"] or 1
    torch.set_num_threads(threads)
    info = machine_info(device)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    if args.cifar_root:
        cifar = cifar10_images(args.cifar_root, args.images)
        cifar_name = f"CIFAR-10 train (first {args.images})"
    else:
        cifar = random_images(args.images, (3, 32, 32), args.seed)
        cifar_name = "random uint8 CIFAR-format (seeded)"
    sgd = args.optimizer == "sgd"
    rows = [
        Row(
            name=f"CifarResNet18 (width {args.width})" if args.width != 64 else "CifarResNet18",
            data_name=cifar_name,
            build=lambda: CifarResNet18(num_classes=NUM_CLASSES, in_channels=3, width=args.width),
            data=cifar,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr or (0.1 if sgd else 0.01),
            repeats=args.repeats,
            warmup_batches=args.warmup_batches,
        )
    ]
    if not args.skip_small:
        rows.append(
            Row(
                name="SmallCNN",
                data_name="random uint8 digits-format 1x8x8 (seeded)",
                build=lambda: SmallCNN(num_classes=NUM_CLASSES, in_channels=1, image_size=8),
                data=random_images(args.small_images, (1, 8, 8), args.seed + 1),
                batch_size=args.small_batch_size,
                optimizer=args.optimizer,
                lr=0.1 if sgd else 1e-3,
                repeats=args.small_repeats,
                warmup_batches=args.small_warmup_batches,
            )
        )

    t0 = time.perf_counter()
    results = []
    for row in rows:
        print(
            f"{row.name}: {len(row.data)} images, batch {row.batch_size}, {row.repeats} rounds",
            flush=True,
        )
        results.append(run_row(row, device, args.seed))
        r = results[-1]
        print(
            f"  -> plain {r['plain']['images_per_s']:.1f} img/s, lit {r['lit']['images_per_s']:.1f} img/s, "
            f"ratio {r['ratio']:.3f}x (fit {r['fit_ratio']:.3f}x)",
            flush=True,
        )
    result: dict[str, Any] = {
        "benchmark": "classifier_throughput",
        "device": str(device),
        "machine": info["machine"],
        "machine_info": info,
        "threads": {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        },
        "load_average": {
            "start": load_start,
            "end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "seed": args.seed,
        "total_s": time.perf_counter() - t0,
        "rows": results,
    }
    stem = Path(args.out) if args.out else RESULTS / f"classifier_throughput_{device.type}"
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    info = result["machine_info"]
    th = result["threads"]
    la = result["load_average"]
    load = (
        f"; 1-min load average {la['start'][0]:.2f} at start, {la['end'][0]:.2f} at end"
        if la["start"]
        else ""
    )
    lines = [
        f"# Classifier training throughput ({result['device']}, {result['machine']})",
        "",
        f"torch {info['torch']}, lightning {info['lightning']}, Python {info['python']}; "
        f"torch threads {th['intra_op']} intra-op / {th['inter_op']} inter-op{load}.",
        "",
        "Protocol: plain PyTorch loop (whole uint8 tensor on the device, seeded permutation sliced into "
        "index batches, `.float()/255`, per-channel normalisation, forward, CE, backward, step) against "
        "`ClassificationTask` + `ClassificationData` (tensor-sliced `TensorBatchLoader` batches, no "
        "per-sample collate) under a bare `lightning.Trainer(max_epochs=1, logger=False, ...)`, in the "
        "same process. Same initial weights (same seed), batch size, optimiser, normalisation "
        "statistics and data order. One warm-up fit per side, then interleaved rounds (ABBA); each "
        "number is the median over the rounds. *epoch* = the training epoch only (callback between "
        "epoch start and end: Trainer/loader construction excluded); *fit* = end to end (Trainer "
        "construction + `fit`; plain: model/data to the device + optimiser + epoch). "
        "ratio = lit / plain (lower is better; 1.00x = no overhead).",
        "",
        "| model | data | N | batch | steps | optimiser | rounds | plain s/epoch | lit s/epoch | "
        "plain img/s | lit img/s | ratio (epoch) | overhead ms/step | plain fit s | lit fit s | ratio (fit) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        p, q = r["plain"], r["lit"]
        lines.append(
            f"| {r['model']} | {r['data']} | {r['images']} | {r['batch_size']} | {r['steps_per_epoch']} | "
            f"{r['optimizer']} lr {r['lr']:g} | {r['repeats']} | {p['median_epoch_s']:.3f} | {q['median_epoch_s']:.3f} | "
            f"{p['images_per_s']:.1f} | {q['images_per_s']:.1f} | **{r['ratio']:.2f}x** | "
            f"{r['overhead_ms_per_step']:+.2f} | {p['median_fit_s']:.3f} | {q['median_fit_s']:.3f} | {r['fit_ratio']:.2f}x |"
        )
    lines += [
        "",
        "The same ratio under estimators less sensitive to other processes' load (noise on a shared "
        "machine only adds time): fastest epoch of each side; median CPU time of the process over "
        "the epoch (all threads); median step interval (wall time from one batch's start to the "
        "next's, pooled over all timed epochs; CPU runs only).",
        "",
        "| model | ratio (median epoch) | ratio (min epoch) | ratio (CPU time) | ratio (median step) | "
        "plain ms/step | lit ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        p, q = r["plain"], r["lit"]
        step = r["ratio_median_step"]
        ms = (
            (f"{1e3 * p['median_step_s']:.2f}", f"{1e3 * q['median_step_s']:.2f}")
            if step is not None
            else ("n/a", "n/a")
        )
        lines.append(
            f"| {r['model']} | {r['ratio']:.2f}x | {r['ratio_min_epoch']:.2f}x | "
            f"{r['ratio_cpu_time']:.2f}x | {f'{step:.2f}x' if step is not None else 'n/a'} | "
            f"{ms[0]} | {ms[1]} |"
        )
    lines += ["", "Raw epoch times (s), in round order:", ""]
    for r in result["rows"]:
        plain = ", ".join(f"{t:.3f}" for t in r["plain"]["epoch_s"])
        lit = ", ".join(f"{t:.3f}" for t in r["lit"]["epoch_s"])
        lines.append(
            f"- {r['model']}: plain [{plain}]; lit [{lit}]; "
            f"max |mean-loss difference| {r['max_abs_mean_loss_diff']:.2e}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
