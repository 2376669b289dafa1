"""Every data reader under fuzzed files (issue 22, part 5): the only exceptions allowed are the
package's own clear errors (:func:`tests.datamodules.fuzz_cases.is_clear`).

The default profile draws 50 inputs per reader (the module stays under a minute on
two cores); the ``slow`` test draws 300 per reader. ``benchmarks/fuzz_readers.py`` counts the
outcomes for the issue's table.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.datamodules.fuzz_cases import (
    READERS,
    FuzzInput,
    Mutation,
    _apply,
    fuzz_inputs,
    run_reader,
)

_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_raises_only_clear_errors(name: str) -> None:
    @settings(max_examples=50, **_SETTINGS)  # type: ignore[arg-type]
    @given(inp=fuzz_inputs(name))
    def check(inp: FuzzInput) -> None:
        assert run_reader(name, inp) in ("loaded", "clear error")

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_raises_only_clear_errors_long(name: str) -> None:
    @settings(max_examples=300, **_SETTINGS)  # type: ignore[arg-type]
    @given(inp=fuzz_inputs(name))
    def check(inp: FuzzInput) -> None:
        assert run_reader(name, inp) in ("loaded", "clear error")

    check()


@pytest.mark.parametrize("name", sorted(READERS))
def test_unmutated_sample_loads(name: str) -> None:
    assert run_reader(name, FuzzInput(READERS[name].sample())) == "loaded"


def test_checkpoint_overwrite_that_asked_for_an_absurd_allocation() -> None:
    """Found by the fuzz run (2026-12-06): a two-byte overwrite of a user-index checkpoint made
    torch.load raise MemoryError; it is a clear error now."""
    base = READERS["user-index-ckpt"].sample()
    key = sorted(base)[0]
    mutation = Mutation(kind="overwrite", file=0, at=0.171875, tokens=(b"true", b"null"))
    files = {**base, key: _apply(base[key], mutation)}
    assert run_reader("user-index-ckpt", FuzzInput(files)) == "clear error"
