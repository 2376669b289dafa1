"""LightGCN: linear graph propagation of ID embeddings over the user-item bipartite graph.

``torch_geometric`` is imported inside the constructor and methods, not at module level: it
takes seconds to import and the CLI's ``--help`` must stay fast.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lit_unlearn.models.base import Recommender, check_non_negative_int


class LightGCN(Recommender):
    """LightGCN with a dot-product scorer.

    He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
    SIGIR 2020. Layer-0 user and item embeddings ``E^(0)`` are propagated ``num_layers`` times
    over the symmetrically normalised bipartite adjacency, ``E^(k+1) = D^-1/2 A D^-1/2 E^(k)``
    (no self-loops, no weights, no non-linearity; :class:`torch_geometric.nn.conv.LGConv`), and
    the final representation is the layer mean ``E = 1/(K+1) sum_k E^(k)`` (the paper's
    ``alpha_k = 1/(K+1)``). Duplicate (user, item) training pairs count once, so ``A`` is binary.

    The training graph is an argument of :meth:`embed` (never registered state, so checkpoints
    carry no data). Its normalised adjacency is built once and cached, keyed on the tensor's
    storage, shape, version counter and content, so repeated calls with the same graph do not
    rebuild it and a different (or in-place modified) graph does. Pass the same tensor every step
    (moved to the model's device once) for the cheapest cache hit.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Width of the layer-0 embeddings (and of the representations).
        num_layers: Number of propagation layers ``K``; ``0`` reduces to matrix factorisation.

    Raises:
        ValueError: A size is not a positive int or ``num_layers`` is negative.
    """

    needs_graph: ClassVar[bool] = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim)
        self.num_layers = check_non_negative_int("num_layers", num_layers)
        from torch_geometric.nn.conv import LGConv

        # Normalisation is precomputed once per graph (see _adjacency), not per layer and step.
        self.conv: nn.Module = LGConv(normalize=False)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        # (graph tensor the cache was built from, its version counter, normalised adjacency)
        self._graph_cache: tuple[Tensor, int, Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw both embedding tables from ``N(0, 0.1^2)``."""
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and deep copies must not drag the cached graph along (data, not state).
        state = self.__dict__.copy()
        state["_graph_cache"] = None
        return state

    # ------------------------------------------------------------------ graph
    def _check_graph(self, graph: Tensor | None) -> Tensor:
        if graph is None:
            raise ValueError(
                "LightGCN needs graph=: the training (user, item) pairs as a LongTensor [2, E]"
            )
        if graph.dtype != torch.long or graph.ndim != 2 or graph.shape[0] != 2:
            raise ValueError(
                f"graph must be a LongTensor [2, E], got {graph.dtype} {tuple(graph.shape)}"
            )
        return graph

    def _cache_hit(self, graph: Tensor, dtype: torch.dtype, device: torch.device) -> bool:
        if self._graph_cache is None:
            return False
        ref, version, adj = self._graph_cache
        if adj.dtype != dtype or adj.device != device:
            return False
        if ref.shape != graph.shape or ref.device != graph.device:
            return False
        # Fast path: the very same memory, unmodified. The cache holds ``ref`` alive, so its
        # address cannot be reused by another tensor while cached.
        if (
            ref.data_ptr() == graph.data_ptr()
            and ref.stride() == graph.stride()
            and graph._version == version
        ):
            return True
        # Another tensor (e.g. a fresh ``.to(device)`` copy) with the same content.
        if ref._version == version and torch.equal(ref, graph):
            self._graph_cache = (graph, graph._version, adj)
            return True
        return False

    def _adjacency(self, graph: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Sparse ``D^-1/2 A D^-1/2`` over ``num_users + num_items`` nodes, cached per graph."""
        if self._cache_hit(graph, dtype, device):
            assert self._graph_cache is not None
            return self._graph_cache[2]
        from torch_geometric.nn.conv.gcn_conv import gcn_norm
        from torch_geometric.utils import coalesce, to_torch_csr_tensor

        g = graph.to(device)
        users, items = g[0], g[1]
        if g.numel() and (
            int(users.min()) < 0
            or int(users.max()) >= self.num_users
            or int(items.min()) < 0
            or int(items.max()) >= self.num_items
        ):
            raise ValueError(
                f"graph ids out of range: users must be in [0, {self.num_users}), items in "
                f"[0, {self.num_items}) (items are not offset by num_users)"
            )
        n = self.num_users + self.num_items
        items = items + self.num_users
        edge_index = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
        edge_index = coalesce(edge_index, num_nodes=n)  # drop duplicate pairs: binary A
        edge_index, weight = gcn_norm(edge_index, None, n, add_self_loops=False, dtype=dtype)
        assert weight is not None
        # CSR is what torch_geometric's spmm multiplies with (it would convert COO every call).
        with warnings.catch_warnings():  # torch's one-off "beta" / "invariant checks" notices
            warnings.filterwarnings("ignore", message=r"Sparse (CSR tensor support|invariant)")
            adj = to_torch_csr_tensor(edge_index, weight, size=(n, n))
        self._graph_cache = (graph, graph._version, adj)
        return adj

    def propagate(self, graph: Tensor | None) -> tuple[Tensor, Tensor]:
        """Layer-mean propagated embeddings of all users and all items.

        Returns:
            ``(users [num_users, d], items [num_items, d])``.

        Raises:
            ValueError: ``graph`` is None, malformed or has out-of-range ids.
        """
        graph = self._check_graph(graph)
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)
        adj = self._adjacency(graph, x.dtype, x.device)
        total = x
        for _ in range(self.num_layers):
            x = self.conv(x, adj)  # adj is symmetric, so it is its own transpose
            total = total + x
        out = total / (self.num_layers + 1)
        user_out, item_out = out.split([self.num_users, self.num_items], dim=0)
        return user_out, item_out

    # ------------------------------------------------------------------ Recommender API
    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Propagated representations of ``users`` and ``items`` (one propagation for both).

        Raises:
            ValueError: ``graph`` is None, malformed or has out-of-range ids.
        """
        user_out, item_out = self.propagate(graph)
        user_out = self._shift_users(user_out, None)
        if users is not None:
            user_out = user_out[users.to(user_out.device)]
        if items is not None:
            item_out = item_out[items.to(item_out.device)]
        return user_out, item_out

    def user_parameters(self) -> list[nn.Parameter]:
        """The layer-0 user embedding table (and the user shift, when enabled)."""
        return list(self.user_embedding.parameters()) + self._shift_parameters()

    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """See :meth:`Recommender.l2_batch` (layer-0 embeddings, the paper's Eq. 15)."""
        sq = self._sq_norm(self.user_embedding, users) + self._sq_norm(self.item_embedding, items)
        return sq / max(users.numel(), 1)
