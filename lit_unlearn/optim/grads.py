"""Moving gradients between parameters' ``.grad`` fields and flat vectors, and their Gramian.

Multi-objective steps compute one gradient per objective over the same parameters, flatten each
(:func:`flatten_grads`), stack them into a Jacobian ``J`` ``[m, P]``, hand its Gramian
(:func:`gramian`) to a :class:`~lit_unlearn.optim.combiner.GradientCombiner` and write the
combined direction back (:func:`assign_flat_grad`).
"""

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["assign_flat_grad", "flatten_grads", "gramian"]


def gramian(grads: Tensor) -> Tensor:
    """Gramian ``G = J J^T`` of stacked objective gradients, in float64.

    Args:
        grads: Jacobian ``J`` of shape ``[m, P]``: one (flattened) gradient per row.

    Returns:
        ``[m, m]`` float64 tensor on ``grads``' device, ``G[i, j] = <g_i, g_j>``.

    Raises:
        ValueError: If ``grads`` is not two-dimensional.
    """
    if grads.dim() != 2:
        raise ValueError(
            f"grads must be a [m, P] matrix (one flattened gradient per row), "
            f"got shape {tuple(grads.shape)}"
        )
    j = grads.detach().to(torch.float64)
    return j @ j.T


def _as_param_list(params: Iterable[Tensor]) -> list[Tensor]:
    plist = list(params)
    if not plist:
        raise ValueError("params is empty: nothing to flatten or assign")
    dtypes = {p.dtype for p in plist}
    devices = {p.device for p in plist}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            "all params must share one dtype and device to form a flat gradient, got dtypes "
            f"{sorted(str(d) for d in dtypes)} and devices {sorted(str(d) for d in devices)}"
        )
    return plist


def flatten_grads(params: Iterable[Tensor]) -> Tensor:
    """Concatenate the ``.grad`` of ``params`` into one flat vector.

    Parameters whose ``.grad`` is ``None`` contribute zeros, so the layout (and length) only
    depends on the parameters, never on which of them received a gradient. Sparse gradients
    are densified. The result is a new tensor: editing it leaves the ``.grad`` fields alone.

    Args:
        params: Parameters (any iterable, e.g. ``module.parameters()``), all of one dtype and
            device.

    Returns:
        1-D tensor of length ``sum(p.numel())`` with the params' dtype and device.

    Raises:
        ValueError: If ``params`` is empty or mixes dtypes/devices.
    """
    plist = _as_param_list(params)
    chunks = []
    for p in plist:
        g = p.grad
        if g is None:
            chunks.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device))
        else:
            g = g.detach()
            if g.is_sparse:
                g = g.to_dense()
            chunks.append(g.reshape(-1).to(p.dtype))
    return torch.cat(chunks)


def assign_flat_grad(params: Iterable[Tensor], flat: Tensor) -> None:
    """Write a flat vector back into the ``.grad`` of ``params`` (inverse of :func:`flatten_grads`).

    Existing dense gradients are overwritten in place (so optimiser state and DDP bucket views
    that alias them stay valid); missing (``None``) or sparse ones are replaced by a fresh dense
    tensor that does not alias ``flat``.

    Args:
        params: The same parameters, in the same order, as given to :func:`flatten_grads`.
        flat: 1-D tensor of length ``sum(p.numel())``; cast to the params' dtype and device.

    Raises:
        ValueError: If ``params`` is empty, mixes dtypes/devices, or ``flat`` has the wrong
            shape.
    """
    plist = _as_param_list(params)
    total = sum(p.numel() for p in plist)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(
            f"flat must be a 1-D tensor with {total} elements (the params' total size), "
            f"got shape {tuple(flat.shape)}"
        )
    with torch.no_grad():
        offset = 0
        for p in plist:
            n = p.numel()
            chunk = flat[offset : offset + n].detach().view_as(p).to(device=p.device, dtype=p.dtype)
            offset += n
            if p.grad is None or p.grad.is_sparse:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
