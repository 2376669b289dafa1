"""Mult-VAE: a variational autoencoder over a user's interaction row (the FedVAE backbone)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.models.base import Recommender, check_dropout, check_positive_int


def history_rows(graph: Tensor, users: Tensor | None, num_users: int, num_items: int) -> Tensor:
    """Multi-hot interaction rows ``[B, num_items]`` of ``users`` (all users when None).

    Args:
        graph: Training pairs ``[2, E]`` (user, item).
        users: User ids ``[B]`` or None.
        num_users: Number of users (the id range of ``graph[0]``).
        num_items: Number of items.
    """
    dense = torch.zeros(num_users, num_items, device=graph.device)
    dense[graph[0], graph[1]] = 1.0
    return dense if users is None else dense[users.to(graph.device)]


class MultVAE(Recommender):
    """Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

    The encoder reads a user's L2-normalised interaction row ``x_u`` (with input dropout while
    training) through ``Linear(I, hidden) -> tanh -> Linear(hidden, 2d)`` into ``(mu, logvar)``;
    the decoder maps ``z`` (``mu`` at evaluation) through ``Linear(d, hidden) -> tanh ->
    Linear(hidden, I)`` to logits over all items. Training maximises the multinomial
    log-likelihood of ``x_u`` minus ``beta`` times the Gaussian KL (Eq. 5 of the paper;
    :meth:`elbo_terms`).

    As a :class:`Recommender` the score factorises as a dot product: the user representation
    is ``[tanh(W_1 mu + b_1), 1]`` and the item representation ``[W_2[i], b_2[i]]``, so the
    shared full/sampled ranking code applies unchanged. The interaction rows come from the
    ``graph`` argument (the training pairs), as for graph backbones. :meth:`user_representation`
    is the encoder mean ``mu(x_u)`` (``[U, d]``): FedVAE's user embedding (FedAU2 Sec. 5), the
    vector its attackers and its adversary read.

    Mult-VAE has no per-user parameter: in a user-level federated setting every weight is
    shared and ``x_u`` is the client's private data.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Latent width ``d`` (FedAU2: 200).
        hidden: Width of the encoder and decoder hidden layers (Mult-VAE: 600).
        dropout: Input dropout on ``x_u`` while training (Mult-VAE: 0.5).

    Raises:
        ValueError: A size is not a positive int or ``dropout`` is outside ``[0, 1)``.
    """

    #: Scores are computed from the interaction rows, passed as the training graph.
    needs_graph: ClassVar[bool] = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 200,
        hidden: int = 600,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim)
        self.hidden = check_positive_int("hidden", hidden)
        self.dropout = check_dropout(dropout)
        self.encoder = nn.Linear(num_items, hidden)
        self.encoder_out = nn.Linear(hidden, 2 * embedding_dim)
        self.decoder = nn.Linear(embedding_dim, hidden)
        self.decoder_out = nn.Linear(hidden, num_items)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (FedAU2 App. A.3: Xavier init)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def representation_dim(self) -> int:
        """Width ``d`` of :meth:`user_representation` (the encoder mean), which a user shift
        offsets before decoding."""
        return self.embedding_dim

    def _rows_are_shared(self) -> bool:
        # input dropout draws a mask per row occurrence while training
        return not (self.training and self.dropout > 0)

    # ------------------------------------------------------------------ the VAE
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of interaction rows ``x [B, I]`` (normalised, dropped out here)."""
        h = F.normalize(x, dim=-1)
        h = F.dropout(h, self.dropout, self.training)
        h = torch.tanh(self.encoder(h))
        mu, logvar = self.encoder_out(h).chunk(2, dim=-1)
        return mu, logvar

    def decode_hidden(self, z: Tensor) -> Tensor:
        """The decoder's hidden layer ``tanh(W_1 z + b_1)``."""
        return torch.tanh(self.decoder(z))

    def elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row negative log-likelihood, KL and the latent mean (Mult-VAE Eq. 5).

        In training mode ``z = mu + sigma * eps`` (reparameterisation); in eval mode ``z = mu``.

        Args:
            x: Interaction rows ``[B, I]`` (multi-hot).

        Returns:
            ``(nll [B], kl [B], mu [B, d])`` with ``nll = -sum_i x_i log softmax(logits)_i``
            and ``kl = KL(N(mu, sigma^2) || N(0, I))``.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        logits = self.decoder_out(self.decode_hidden(z))
        nll = -(F.log_softmax(logits, dim=-1) * x).sum(dim=-1)
        kl = 0.5 * (logvar.exp() + mu.square() - 1.0 - logvar).sum(dim=-1)
        return nll, kl, mu

    # ------------------------------------------------------------------ Recommender
    def _history(self, users: Tensor | None, graph: Tensor | None) -> Tensor:
        if graph is None:
            raise ValueError(
                "MultVAE scores from the users' interaction rows: pass the training pairs as "
                "graph (the task attaches them from a data-dependent DataModule)"
            )
        return history_rows(graph, users, self.num_users, self.num_items)

    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``([tanh(W_1 mu(x_u) + b_1), 1], [W_2[i], b_2[i]])`` (see the class docstring)."""
        mu, _ = self.encode(self._history(users, graph))
        hidden = self.decode_hidden(self._shift_users(mu, users))
        user_rep = torch.cat([hidden, torch.ones_like(hidden[..., :1])], dim=-1)
        weight = self.decoder_out.weight
        bias = self.decoder_out.bias.unsqueeze(-1)
        item_table = torch.cat([weight, bias], dim=-1)  # [I, hidden + 1]
        item_rep = item_table if items is None else item_table[items]
        return user_rep, item_rep

    def user_representation(self, graph: Tensor | None = None) -> Tensor:
        """Encoder means ``mu(x_u)`` of every user, ``[U, d]`` (FedVAE's user embedding)."""
        return self._shift_users(self.encode(self._history(None, graph))[0], None)

    def user_parameters(self) -> list[nn.Parameter]:
        """The encoder: the only path from a user's data to its representation."""
        params = [*self.encoder.parameters(), *self.encoder_out.parameters()]
        return params + self._shift_parameters()

    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """Mult-VAE has no id embeddings: the squared norm of the decoder rows of ``items``."""
        rows = self.decoder_out.weight[items.reshape(-1)]
        return rows.square().sum() / max(users.numel(), 1)
