"""How much the AttrCloak table's Original model moves with the CPU thread count (issue 23).

``make attrcloak-table`` first trains the Original recommender (``lit-unlearn fit --config
configs/experiment/ml100k_ncf.yaml``: NCF on ML-100K, 30 epochs, seed 0). CPU kernels split their
reductions by thread, so the same seed on another thread count sums in another order and the
trained model, and its ranking metrics, can differ in more than the last digit. This study trains
that model once per thread count (same config, same seed), each in a fresh process with
``torch.set_num_threads(n)`` and ``OMP_NUM_THREADS=n``, and reports the test-split sampled and full
HR@10 / NDCG@10 of the weights in ``last.ckpt`` (the checkpoint the table unlearns; with the
monitored ModelCheckpoint, Lightning's ``save_last`` copies each new best, so it holds the best
validation epoch's weights), the spread
across thread counts, and whether the weights are bit-identical (a hash of the state dict).

The fit is the CLI's own (the config's trainer, validation every 5 epochs, its attribute audit at
fit start and end), with the checkpoint callback redirected to a temporary folder, so nothing
under ``runs/`` is touched.

The weights also depend on the machine: MKL picks its GEMM kernels by instruction set and CPU
vendor. ``--env`` adds environment variants (each a space-separated list of ``KEY=VALUE``, ``""``
the environment as it is), every one run at every thread count, so the same report shows whether
``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical reproducibility) gives the same weights
with every kernel set this CPU offers (``MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2``
stands in for an AVX2-only machine).

Usage::

    python benchmarks/attrcloak_thread_spread.py                  # threads 1 and 2, 30 epochs
    python benchmarks/attrcloak_thread_spread.py --threads 1 2 4 --repeats 2
    python benchmarks/attrcloak_thread_spread.py --threads 1 --env "" \
        "MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2" "MKL_CBWR=COMPATIBLE" \
        "MKL_CBWR=COMPATIBLE MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2"
    python benchmarks/attrcloak_thread_spread.py --epochs 1 --out /tmp/spread.md   # smoke test

Writes ``benchmarks/results/attrcloak_thread_spread.{md,json}`` (``--out``), with provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = "configs/experiment/ml100k_ncf.yaml"
OUT = REPO / "benchmarks" / "results" / "attrcloak_thread_spread.md"
METRICS = ("sampled/hr@10", "sampled/ndcg@10", "full/hr@10", "full/ndcg@10")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (the table's: 30)")
    p.add_argument("--seed", type=int, default=0, help="seed_everything of every run")
    p.add_argument("--repeats", type=int, default=1, help="runs per thread count")
    p.add_argument("--config", default=CONFIG, help="the Original's training config")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra CLI override of the fit, repeatable, '=' form: --override=--data.init_args.x=1",
    )
    p.add_argument(
        "--env",
        nargs="+",
        default=[""],
        help="environment variants, each 'KEY=VALUE KEY=VALUE' ('' = unchanged), every one run "
        "at every thread count",
    )
    p.add_argument("--out", type=Path, default=OUT, help="Markdown report (JSON beside it)")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _state_hash(state: dict[str, Any]) -> str:
    """SHA-256 over the state dict's tensors (names and bytes, sorted): equal iff bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def train_once(config: str, epochs: int, seed: int, overrides: Sequence[str]) -> dict[str, Any]:
    """One fit of the Original in this process (threads as set), its test metrics and hash."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_unlearn.cli import build_cli
    from lit_unlearn.reporting.provenance import provenance
    from lit_unlearn.runs import bare_trainer

    with tempfile.TemporaryDirectory(prefix="thread_spread_") as tmp:
        args = [
            "--config", config,
            f"--seed_everything={seed}",
            f"--trainer.max_epochs={epochs}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp}",
            *overrides,
        ]  # fmt: skip
        cli = build_cli(args, run=False)
        for callback in cli.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint):  # never overwrite runs/ml100k_ncf/
                callback.dirpath = str(Path(tmp) / "checkpoints")
            if hasattr(callback, "save_dir"):  # the attribute audit's files
                callback.save_dir = tmp
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        seconds = time.perf_counter() - t0
        device = str(cli.trainer.strategy.root_device)
        # The weights the table unlearns: last.ckpt. With a monitored ModelCheckpoint,
        # Lightning writes last.ckpt as a copy of each new best (save_last), so it holds the
        # best validation epoch's weights, not the final epoch's (epoch 25 of 30 here).
        last = Path(tmp) / "checkpoints" / "last.ckpt"
        if last.is_file():
            state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
            cli.model.load_state_dict(state)
        metrics = bare_trainer(1, accelerator=device.split(":")[0]).test(
            cli.model, cli.datamodule, verbose=False
        )[0]
    return {
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "seed": seed,
        "seconds": seconds,
        **{m: float(metrics[f"test/{m}"]) for m in METRICS if f"test/{m}" in metrics},
        "weights_sha256": _state_hash(cli.model.state_dict()),
        "provenance": provenance(device),
    }


def _worker(args: argparse.Namespace, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.chdir(REPO)  # the data config's dataset root is relative to the repository
    result = train_once(args.config, args.epochs, args.seed, args.override)
    args.worker.write_text(json.dumps(result))


def parse_env(variant: str) -> dict[str, str]:
    """``'A=1 B=2'`` -> ``{'A': '1', 'B': '2'}`` (``''``: no change).

    Raises:
        ValueError: A word without ``=`` or with an empty name.
    """
    pairs = {}
    for word in variant.split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"--env words must be KEY=VALUE, got {word!r} in {variant!r}")
        pairs[key] = value
    return pairs


def _run(args: argparse.Namespace, threads: int, variant: str = "") -> dict[str, Any]:
    """One fit in a fresh interpreter with ``threads`` threads and the ``variant``'s variables."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        **parse_env(variant),
    )
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", str(result_path),
            "--threads", str(threads), "--epochs", str(args.epochs), "--seed", str(args.seed),
            "--config", args.config, *(f"--override={o}" for o in args.override),
        ]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
        result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def report(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    """The Markdown report: one line per run, the spread per metric, provenance."""
    from lit_unlearn.reporting.provenance import provenance_lines

    command = "python benchmarks/attrcloak_thread_spread.py " + " ".join(
        [f"--threads {' '.join(map(str, args.threads))}", f"--epochs {args.epochs}"]
        + [f"--seed {args.seed}", f"--repeats {args.repeats}"]
        + [f"--override={o}" for o in args.override]
        + (["--env " + " ".join(f'"{v}"' for v in args.env)] if args.env != [""] else [])
    )
    head = (
        "| threads | env | kernels | run | " + " | ".join(METRICS) + " | fit s | weights sha256 |"
    )
    lines = [
        "# AttrCloak table: the Original model across CPU thread counts and kernels",
        "",
        f"`{args.config}` ({args.epochs} epochs, seed {args.seed}, the CLI's own fit), one fresh "
        "process per run with `torch.set_num_threads(n)` and `OMP_NUM_THREADS=n`; test split, "
        "the weights in `last.ckpt`, which `make attrcloak-table` unlearns (Lightning's `save_last` "
        "copies each new best of the monitored checkpoint: the best validation epoch, 25 of 30 "
        "here, not the final epoch). `sampled`: the "
        "test item against 99 sampled negatives, `full`: against every unseen item.",
        "",
        f"Command: `{command}`",
        "",
        "`env`: the variables set for the run (`-`: none); `kernels`: ATen's vector ISA and "
        "MKL's reproducibility mode as the run saw them.",
        "",
        head,
        "|" + "---|" * (len(METRICS) + 6),
    ]
    for r in results:
        cells = " | ".join(f"{r[m]:.4f}" for m in METRICS)
        kernels = r["provenance"].get("kernels", "-")
        lines.append(
            f"| {r['threads']} | {r.get('env') or '-'} | {kernels} | {r['run']} | {cells} | "
            f"{r['seconds']:.1f} | `{r['weights_sha256'][:12]}` |"
        )
    lines += ["", "Spread (max - min over all runs):", ""]
    lines += [
        f"- {m}: {max(r[m] for r in results) - min(r[m] for r in results):.4f} "
        f"({min(r[m] for r in results):.4f} to {max(r[m] for r in results):.4f})"
        for m in METRICS
    ]
    hashes = {r["weights_sha256"] for r in results}
    lines += [
        "",
        "Weights bit-identical across all runs: "
        + ("yes" if len(hashes) == 1 else f"no ({len(hashes)} distinct)"),
        "",
        "## Provenance",
        "",
        *provenance_lines(r["provenance"] for r in results),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        _worker(args, args.threads[0])
        return []
    if any(t < 1 for t in args.threads) or args.epochs < 1 or args.repeats < 1:
        parser.error("--threads, --epochs and --repeats must be >= 1")
    for variant in args.env:
        try:
            parse_env(variant)
        except ValueError as err:
            parser.error(str(err))
    results = []
    for variant in args.env:
        for threads in args.threads:
            for run in range(args.repeats):
                print(
                    f"threads {threads}, env {variant or '-'}, run {run}: training ...",
                    file=sys.stderr,
                    flush=True,
                )
                result = {**_run(args, threads, variant), "run": run, "env": variant}
                print(
                    "  " + ", ".join(f"{m} {result[m]:.4f}" for m in METRICS),
                    file=sys.stderr,
                    flush=True,
                )
                results.append(result)
    text = report(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return results


if __name__ == "__main__":
    main()
