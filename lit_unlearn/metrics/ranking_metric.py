"""``torchmetrics`` wrapper that averages per-row ranking metrics over rows and processes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_unlearn.metrics.ranking import DEFAULT_KS, check_ks, metric_keys

__all__ = ["PROTOCOLS", "RankingMetrics", "protocol_prefix"]

PROTOCOLS: tuple[str, ...] = ("full", "sampled")
"""Evaluation protocols; see :mod:`lit_unlearn.metrics.ranking`."""


def protocol_prefix(stage: str, protocol: str) -> str:
    """Key prefix that names the protocol of every reported number.

    Args:
        stage: E.g. ``"val"`` or ``"test"``.
        protocol: ``"full"`` or ``"sampled"``.

    Returns:
        ``f"{stage}/{protocol}/"``, e.g. ``"test/sampled/"`` (keys become ``"test/sampled/hr@10"``).

    Raises:
        ValueError: On an unknown protocol or an empty stage.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not stage:
        raise ValueError("stage must be a non-empty string")
    return f"{stage}/{protocol}/"


def _state_name(key: str) -> str:
    """``"ndcg@10"`` -> ``"sum_ndcg_at_10"`` (a valid attribute name)."""
    return "sum_" + key.replace("@", "_at_")


class RankingMetrics(Metric):
    """Mean of per-row HR / Recall / NDCG at several cut-offs, exact under DDP.

    Feed it the per-row dicts of :func:`~lit_unlearn.metrics.ranking.metrics_from_hits` /
    :func:`~lit_unlearn.metrics.ranking.metrics_from_ranks` (or the ``*_values`` shortcuts). It
    keeps one float64 sum per metric plus a row count, all reduced with ``sum`` across processes,
    so

    ``compute()[f"{prefix}{name}@{k}"] = (sum over rows of all processes of value) / (row count)``

    equals the single-process result whenever each row is evaluated on exactly one process. A
    ``DistributedSampler`` that pads the last batch by repeating rows breaks that: shard the
    evaluation rows without padding (e.g. rows ``rank::world_size``).

    Metric states are float64, so this metric cannot live on a device without float64 support
    (Apple MPS).

    Typical use in a ``LightningModule``: ``self.val_full = RankingMetrics(prefix="val/full/")``,
    ``self.val_full.update(full_ranking_values(...))`` in ``validation_step``, then
    ``self.log_dict(self.val_full.compute())`` and ``self.val_full.reset()`` in
    ``on_validation_epoch_end``.

    Args:
        ks: Cut-offs, positive ints, sorted, unique.
        prefix: Prepended to every key of :meth:`compute`; name the protocol in it (see
            :func:`protocol_prefix`).

    Raises:
        ValueError: On invalid ``ks``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    count: Tensor

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> None:
        super().__init__()
        self.ks: tuple[int, ...] = check_ks(ks)
        self.prefix = prefix
        self.keys: tuple[str, ...] = tuple(metric_keys(self.ks))
        for key in self.keys:
            self.add_state(
                _state_name(key),
                default=torch.tensor(0.0, dtype=torch.float64),
                dist_reduce_fx="sum",
            )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: dict[str, Tensor]) -> None:
        """Add a batch of rows.

        Args:
            values: ``{f"{name}@{k}": Tensor[N]}`` holding at least every key of this metric's
                ``ks`` (extra keys, e.g. other cut-offs, are ignored); all tensors of the same
                length ``N`` (``N = 0`` is allowed and adds nothing).

        Raises:
            KeyError: If a key is missing.
            ValueError: If the tensors are not 1-D of one common length.
        """
        missing = [k for k in self.keys if k not in values]
        if missing:
            raise KeyError(f"RankingMetrics.update: missing values {missing}; got {sorted(values)}")
        n: int | None = None
        for key in self.keys:
            v = values[key]
            if v.ndim != 1 or (n is not None and v.shape[0] != n):
                raise ValueError(
                    f"RankingMetrics.update: {key!r} has shape {tuple(v.shape)}, expected 1-D "
                    f"values of one common length{'' if n is None else f' ({n})'}"
                )
            n = v.shape[0]
            state = getattr(self, _state_name(key))
            setattr(self, _state_name(key), state + v.to(state).sum())
        self.count = self.count + (n or 0)

    def compute(self) -> dict[str, Tensor]:
        """Mean of every metric over all rows seen (on all processes).

        Returns:
            ``{f"{prefix}{name}@{k}": Tensor[]}`` (float64 scalars), ordered by name, then ``k``.

        Raises:
            ValueError: If no row was evaluated (the means would be NaN).
        """
        count = int(self.count)
        if count == 0:
            raise ValueError(
                f"RankingMetrics(prefix={self.prefix!r}): no rows evaluated, cannot compute means"
            )
        return {self.prefix + key: getattr(self, _state_name(key)) / count for key in self.keys}
