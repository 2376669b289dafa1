"""The Flower benchmark's parts that need no Flower processes (the real deployment it drives is
tested in ``tests/methods/federated/test_flower.py`` with the same cluster launcher)."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import federated_flower as ff


def _args(**kw: object) -> argparse.Namespace:
    return ff.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_tiny_pairs_give_every_user_three_to_five_distinct_items() -> None:
    pairs = ff.tiny_pairs(6, 12, seed=0)
    assert torch.equal(pairs, ff.tiny_pairs(6, 12, seed=0))
    for u in range(6):
        items = pairs[1, pairs[0] == u]
        assert 3 <= items.numel() <= 5 and items.unique().numel() == items.numel()
        assert int(items.max()) < 12


def test_in_process_reference_is_the_state_after_the_compared_rounds(tmp_path) -> None:
    """The reference is taken after ``num_rounds`` rounds even when more rounds are timed."""
    args = _args(rounds=2, engine_rounds=5)
    config = ff.run_config(args, tmp_path / "r.pt")
    pairs = ff.tiny_pairs(args.users, args.items, args.seed)
    reference, clients, seconds = ff.in_process(config, pairs, args.engine_rounds)
    assert len(clients) == 2 and len(seconds) == 5
    again, clients2, _ = ff.in_process(config, pairs, 2)
    assert clients == clients2
    for name, value in again.items():
        torch.testing.assert_close(reference[name], value, rtol=0, atol=0)
    start = dict(config.build_model().named_parameters())
    assert any(
        not torch.equal(reference[n], start[n.removeprefix("model.")].detach())
        for n in reference
        if n.removeprefix("model.") in start
    )


def test_markdown_names_the_ratio_and_the_equality() -> None:
    res = {
        "provenance": {"machine": "test box", "torch": "2", "python": "3.11"},
        "command": "python benchmarks/federated_flower.py",
        "args": {"users": 4, "items": 12, "fraction": 0.5, "seed": 3},
        "load_average": [0.5, 0.5, 0.5],
        "equal": {"same_clients": True, "clients_flower": [[0, 1]], "max_abs_diff_shared": 0.0},
        "flower": {
            "round_seconds": [10.0, 12.0],
            "median_round_s": 11.0,
            "setup_seconds": 20.0,
            "cluster_start_s": 4.0,
            "total_s": 60.0,
        },
        "in_process": {"rounds": 50, "round_seconds": [0.02], "median_round_s": 0.02},
        "ratio_median": 550.0,
    }
    text = ff.to_markdown(res)
    assert "**550x**" in text and "20.00 ms" in text and "test box" in text
    assert "Same clients every round: **True**" in text and "**0.0e+00**" in text


def test_bad_arguments_and_a_missing_flower_are_refused(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit):
        ff.parse_args(["--rounds", "0"])
    monkeypatch.setattr(
        "lit_unlearn.methods.federated.flower_cluster.missing_commands", lambda: ["flwr"]
    )
    with pytest.raises(SystemExit) as stop:
        ff.main([])
    assert stop.value.code == 2
    assert "['flwr']" in capsys.readouterr().err


def test_the_cluster_refuses_to_start_without_flower_commands(tmp_path) -> None:
    from lit_unlearn.methods.federated.flower_cluster import (
        FlowerClusterError,
        LocalFlowerCluster,
        missing_commands,
    )

    empty = tmp_path / "bin"
    empty.mkdir()
    assert missing_commands(empty) == ["flower-superlink", "flower-supernode", "flwr"]
    with pytest.raises(FlowerClusterError, match=r"\.\[flower\]"):
        LocalFlowerCluster(tmp_path / "root", bin_dir=empty)
    assert not (tmp_path / "root").exists()  # nothing written before the check
