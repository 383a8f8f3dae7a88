"""NDT-like masked transformer for forward prediction (NLB setting): one token per bin,
context bins read in from their population counts, future bins replaced by a learned mask
token, a bidirectional transformer over all Tc+T tokens, per-(bin, unit) outputs."""

from __future__ import annotations

import torch
from torch import nn

from ._neural import NeuralBaseline, UnitReadin, UnitReadout


class _NDTNet(nn.Module):
    def __init__(self, n_vocab, dim, n_params, n_tokens, n_layers, n_heads, dropout):
        super().__init__()
        self.readin = UnitReadin(n_vocab, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, n_heads, 2 * dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.readout = UnitReadout(n_vocab, dim, n_params)


class NDTForward(NeuralBaseline):
    """Masked bidirectional transformer over time tokens, trained on the future bins.

    Extra args: n_layers=2, n_heads=4, dropout=0.1. Each future bin is predicted from the
    context only, so `sample` draws independently per bin given the context. The horizon
    and context lengths are fixed at fit time (learned positions)."""

    name = "ndt_forward"

    def __init__(self, *, n_layers: int = 2, n_heads: int = 4, dropout: float = 0.1, **kw):
        super().__init__(**kw)
        self.n_layers, self.n_heads, self.dropout = n_layers, n_heads, dropout

    def build(self, n_vocab: int, context: int, horizon: int) -> nn.Module:
        return _NDTNet(
            n_vocab,
            self.dim,
            self.likelihood.n_params,
            context + horizon,
            self.n_layers,
            self.n_heads,
            self.dropout,
        )

    def _params(self, batch, generator=None, sample=False):
        net, units, mask = self.net, batch["units"], batch["unit_mask"]
        ctx = batch["context_counts"].float()
        B, Tc, _ = ctx.shape
        T = self._horizon(batch, self.horizon)
        if Tc != self.context or self.horizon < T:
            raise ValueError(
                f"{self.name}: fitted for context {self.context} / horizon "
                f"{self.horizon} bins, got {Tc} / {T}"
            )
        tokens = (
            torch.cat([net.readin(ctx, units, mask), net.mask_token.expand(B, T, -1)], 1)
            + net.pos[: Tc + T]
        )
        h = net.norm(net.encoder(tokens))[:, Tc:]
        params = net.readout(h, units)
        counts = self.likelihood.sample(params, generator) if sample else None
        return params, counts
