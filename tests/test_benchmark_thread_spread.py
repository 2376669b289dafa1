"""The thread-spread study's report (the training itself is run by hand, ~40 s per run)."""

from __future__ import annotations

import pytest

from benchmarks.attrcloak_thread_spread import METRICS, _parser, main, parse_env, report

ENV = {"torch": "2.13.0", "device": "cpu", "git_commit": "abc"}


def test_report_states_the_spread_and_whether_weights_match() -> None:
    args = _parser().parse_args(["--threads", "1", "2", "--epochs", "30"])
    results = [
        {
            "threads": t,
            "run": 0,
            "seconds": 40.0,
            "weights_sha256": sha * 8,
            "provenance": {**ENV, "threads": t},
            **dict.fromkeys(METRICS, value),
        }
        for t, sha, value in ((1, "aaaaaaaa", 0.6087), (2, "bbbbbbbb", 0.6193))
    ]
    text = report(results, args)
    assert "| 1 | - | - | 0 | 0.6087 | 0.6087 | 0.6087 | 0.6087 | 40.0 | `aaaaaaaaaaaa` |" in text
    assert "- sampled/hr@10: 0.0106 (0.6087 to 0.6193)" in text
    assert "Weights bit-identical across all runs: no (2 distinct)" in text
    assert "- threads: 1; 2" in text
    assert "--threads 1 2 --epochs 30 --seed 0" in text


def test_bad_counts_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        main(["--threads", "0"])


def test_env_variants_are_parsed_and_reported() -> None:
    assert parse_env("") == {}
    assert parse_env("MKL_CBWR=COMPATIBLE  ATEN_CPU_CAPABILITY=avx2") == {
        "MKL_CBWR": "COMPATIBLE",
        "ATEN_CPU_CAPABILITY": "avx2",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_env("MKL_CBWR")
    with pytest.raises(SystemExit):
        main(["--env", "=x"])
    args = _parser().parse_args(["--threads", "1", "--env", "", "MKL_CBWR=COMPATIBLE"])
    results = [
        {
            "threads": 1,
            "run": 0,
            "env": env,
            "seconds": 40.0,
            "weights_sha256": "c" * 64,
            "provenance": {**ENV, "threads": 1, "kernels": f"AVX512, MKL_CBWR={mode}"},
            **dict.fromkeys(METRICS, 0.6045),
        }
        for env, mode in (("", "unset"), ("MKL_CBWR=COMPATIBLE", "COMPATIBLE"))
    ]
    text = report(results, args)
    assert "| 1 | MKL_CBWR=COMPATIBLE | AVX512, MKL_CBWR=COMPATIBLE | 0 | 0.6045 |" in text
    assert "| 1 | - | AVX512, MKL_CBWR=unset | 0 |" in text
    assert "Weights bit-identical across all runs: yes" in text
    assert '--env "" "MKL_CBWR=COMPATIBLE"' in text
