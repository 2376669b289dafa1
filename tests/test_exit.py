"""The package's exit hook destroys a live gloo process group, so DDP workers exit cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_unlearn._exit import destroy_default_process_group


def test_destroys_an_initialised_group_and_is_a_no_op_without_one(tmp_path: Path) -> None:
    destroy_default_process_group()  # nothing initialised: must not raise
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        destroy_default_process_group()
        assert not dist.is_initialized()
        destroy_default_process_group()  # second call (e.g. the user already destroyed it)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_hook_runs_at_interpreter_exit(tmp_path: Path) -> None:
    # A fresh interpreter that imports the package, starts a group and just exits: the group
    # must be destroyed on the way out (the marker is printed by the destroy call itself).
    code = f"""
import lit_unlearn
import torch.distributed as dist
original = dist.destroy_process_group
def marked(*args, **kwargs):
    print("DESTROYED", flush=True)
    original(*args, **kwargs)
dist.destroy_process_group = marked
dist.init_process_group("gloo", store=dist.FileStore({str(tmp_path / "store")!r}, 1),
                        rank=0, world_size=1)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "DESTROYED"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int) -> None:
    # Imported in the child, as unpickling a lit_unlearn object under ddp_spawn does.
    import lit_unlearn  # noqa: F401

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    t = torch.ones(8)
    for _ in range(3):
        dist.all_reduce(t)
    # Exit with the group alive, as Lightning's ddp_spawn workers do.


@pytest.mark.ddp
def test_gloo_workers_exit_cleanly() -> None:
    # Without the hook 20-44% of these exits abort (SIGABRT), so 12 in a row without one
    # failure would happen by chance with probability below 0.8^12 = 7%.
    for _ in range(12):
        mp.start_processes(_worker, args=(_free_port(),), nprocs=2, start_method="spawn")
