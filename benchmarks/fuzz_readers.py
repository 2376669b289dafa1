"""Fuzz counts of every data reader (issue 22, part 5): inputs, clear errors, loads, others.

Runs N hypothesis-drawn inputs per reader (the strategies of ``tests/datamodules/fuzz_cases.py``:
mutated valid samples and whole JSON/Parquet/index documents) and writes a Markdown table to
``benchmarks/results/fuzz_readers.md``. "Other exceptions" must be 0: anything but the
package's own clear errors is a bug; the first few are listed under the table.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fuzz_readers --inputs 300
"""

from __future__ import annotations

import argparse
import logging
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from tests.datamodules.fuzz_cases import READERS, FuzzInput, fuzz_inputs, run_reader

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_readers.md"


def fuzz(name: str, inputs: int, seed: int) -> tuple[Counter[str], list[str]]:
    """Outcome counts of ``inputs`` fuzzed inputs of reader ``name``, and the first failures."""
    counts: Counter[str] = Counter()
    failures: list[str] = []

    @settings(
        max_examples=inputs,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # count, do not shrink: a failure is recorded, not raised
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(inp=fuzz_inputs(name))
    def run(inp: FuzzInput) -> None:
        counts["inputs"] += 1
        try:
            counts[run_reader(name, inp)] += 1
        except Exception as err:  # counting every other exception is the point
            counts["other exceptions"] += 1
            if len(failures) < 3:
                last = traceback.format_exception(err)[-1].strip()
                failures.append(f"{type(err).__name__}: {last[:300]} <- {inp.note[:300]}")

    run._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
    run()
    return counts, failures


def main(argv: list[str] | None = None) -> None:
    """Run the fuzz and write the results table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=300, help="inputs per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # The per-load summary is logged (WARNING when users are dropped); thousands of them would
    # drown the table.
    logging.getLogger("lit_unlearn.datamodules").setLevel(logging.ERROR)
    rows = []
    notes: list[str] = []
    total: Counter[str] = Counter()
    start = time.perf_counter()
    for name in sorted(READERS):
        counts, failures = fuzz(name, args.inputs, args.seed)
        total.update(counts)
        rows.append(
            f"| {name} | {counts['inputs']} | {counts['clear error']} | {counts['loaded']} | "
            f"{counts['other exceptions']} |"
        )
        notes += [f"- {name}: {f}" for f in failures]
        print(rows[-1], flush=True)
    rows.append(
        f"| **all** | {total['inputs']} | {total['clear error']} | {total['loaded']} | "
        f"{total['other exceptions']} |"
    )
    seconds = time.perf_counter() - start
    text = "\n".join(
        [
            "# Data readers under fuzzed input (issue 22, part 5)",
            "",
            f"`python -m benchmarks.fuzz_readers --inputs {args.inputs} --seed {args.seed}`: "
            f"{args.inputs} hypothesis-drawn inputs per reader (mutated valid samples: "
            "truncation, separator swaps, stray/latin-1/UTF-16 bytes, lines of numeric extremes, "
            "ambiguous ids, mixed dates, duplicated/deleted lines; plus whole JSON-lines, "
            "Parquet and index documents of arbitrary values). A load counts only if the tables "
            "pass the schema checks and preprocessing; a clear error is the package's "
            "`DataFormatError` naming the file (or a preprocessing `ValueError` naming its "
            f"stage). {seconds:.0f} s on 1 thread.",
            "",
            "| reader | inputs | clear errors | successful loads | other exceptions |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            *(["Other exceptions (first few):", "", *notes, ""] if notes else []),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
