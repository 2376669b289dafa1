"""A Flower deployment on one machine: a SuperLink and one SuperNode per user on 127.0.0.1.

The launch commands of :mod:`.flower` as a context manager, for the Flower tests, the Flower
benchmark (``benchmarks/federated_flower.py``) and anyone who wants to try a deployment before
spreading the nodes over machines. Every process runs insecure with telemetry and update checks
off, in a Flower home of its own under ``root`` (each node installs the app there), and logs to
``root/<name>.log``. :meth:`LocalFlowerCluster.stop` kills every process it started and every
process those started (the per-message ``flwr-clientapp`` children), pass or fail.

Example::

    with LocalFlowerCluster(Path("/tmp/flwr")) as cluster:
        cluster.start(partition_ids=[0, 1, 2, 3], data=Path("/tmp/pairs.npz"))
        result = cluster.run(write_app("/tmp/app", config), Path(config.output_path), 120)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["FLOWER_COMMANDS", "FlowerClusterError", "LocalFlowerCluster", "missing_commands"]

#: The Flower commands a local deployment needs, installed with ``lit_unlearn[flower]``.
FLOWER_COMMANDS = ("flower-superlink", "flower-supernode", "flwr")


class FlowerClusterError(RuntimeError):
    """A Flower process did not start, exited early, or the run gave no result in time."""


def missing_commands(bin_dir: Path | None = None) -> list[str]:
    """The Flower commands not installed beside the running Python (``bin_dir`` by default)."""
    where = bin_dir or Path(sys.executable).parent
    return [b for b in FLOWER_COMMANDS if not (where / b).exists()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no process is listening on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from ``/proc`` (empty where there is none)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class LocalFlowerCluster:
    """A SuperLink and SuperNodes on 127.0.0.1; logs and Flower homes under ``root``.

    Args:
        root: An empty or new directory for the homes, logs and the connection config.
        bin_dir: Where the Flower commands are (default: beside the running Python).
        poll_interval: ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (s) of the SuperLink's executor.

    Raises:
        FlowerClusterError: A Flower command is not installed.
    """

    def __init__(self, root: Path, bin_dir: Path | None = None, poll_interval: float = 0.1) -> None:
        self.bin = bin_dir or Path(sys.executable).parent
        missing = missing_commands(self.bin)
        if missing:
            raise FlowerClusterError(
                f"Flower's commands {missing} are not in {self.bin}: "
                "pip install -c constraints.txt -e '.[flower]' (Python >= 3.11)"
            )
        self.root = Path(root)
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.root / "home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll_interval),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        # `flwr run <app> local` reads the connection from the Flower home's config.
        (self.root / "home" / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n'
            f'[superlink.local]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def __enter__(self) -> LocalFlowerCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    [str(self.bin / args[0]), *args[1:]],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env or self.env,
                    cwd=self.root,
                    start_new_session=True,
                )
            )

    def start(
        self,
        partition_ids: Sequence[int],
        data: Path,
        labels: Sequence[int] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Start the SuperLink and one SuperNode per partition id; wait for the SuperLink.

        Args:
            partition_ids: The users the nodes hold (``partition-id`` of each node's config).
            data: The ``.npz`` of (user, item) pairs every node reads its user's from.
            labels: Each node's attribute label (FedAU2; ``label=`` in its node config).
            timeout: Seconds to wait for the SuperLink to accept connections.

        Raises:
            FlowerClusterError: The SuperLink did not start in time or exited.
        """
        self._start(
            "superlink",
            ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(self.port)],
        )  # fmt: skip
        for k, pid in enumerate(partition_ids):
            home = self.root / f"home-node{k}"  # each node installs the app in its own home
            home.mkdir(exist_ok=True)
            node_config = f'partition-id={pid} data-path="{data}"'
            if labels is not None:
                node_config += f" label={labels[k]}"
            self._start(
                f"supernode{k}",
                ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                 "--host", "127.0.0.1", "--port", str(free_port()),
                 "--node-config", node_config],
                env={**self.env, "FLWR_HOME": str(home)},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # the SuperLink's API is up once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise FlowerClusterError(
                        f"flower-superlink did not start\n{self.tail()}"
                    ) from None
                time.sleep(0.2)

    def run(self, app: Path, output: Path, timeout: float) -> dict[str, Any]:
        """``flwr run`` the app and wait for the ServerApp's result file.

        Args:
            app: An app directory (:func:`~.flower.write_app`).
            output: The run config's ``output-path``.
            timeout: Seconds to wait for the result after the run was submitted.

        Returns:
            :func:`~.flower.load_result` of the result file.

        Raises:
            FlowerClusterError: ``flwr run`` failed, a process exited early, or no result came
                in time (the message holds the tail of every log).
        """
        from lit_unlearn.methods.federated.flower import load_result

        done = subprocess.run(
            [str(self.bin / "flwr"), "run", str(app), "local", "--format", "json"],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            submitted = done.returncode == 0 and bool(json.loads(done.stdout).get("success"))
        except (ValueError, AttributeError):  # not the JSON object `--format json` promises
            submitted = False
        if not submitted:
            raise FlowerClusterError(
                f"flwr run failed:\n{done.stdout.decode()}\n{done.stderr.decode()}"
            )
        deadline = time.monotonic() + timeout
        while not output.exists():
            if time.monotonic() > deadline:
                raise FlowerClusterError(f"no result after {timeout:g} s\n{self.tail()}")
            if any(p.poll() is not None for p in self.procs):
                raise FlowerClusterError(f"a Flower process exited early\n{self.tail()}")
            time.sleep(0.5)
        return load_result(output)

    def tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of every process's log."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}" for log in self.logs)

    def stop(self) -> None:
        """SIGTERM every process and its descendants, SIGKILL what is left after 5 s."""
        pids = [p.pid for p in self.procs]
        for p in self.procs:
            pids += _descendants(p.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        self.procs.clear()
