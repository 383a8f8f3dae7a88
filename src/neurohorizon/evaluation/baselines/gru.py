"""LFADS-like GRU seq2seq: a GRU encodes the context, a GRU decoder rolls the horizon out
autoregressively on its own predictions (training included, so no exposure bias)."""

from __future__ import annotations

import torch
from torch import nn

from ._neural import NeuralBaseline, UnitReadin, UnitReadout


class _GRUNet(nn.Module):
    def __init__(self, n_vocab: int, dim: int, n_params: int):
        super().__init__()
        self.readin = UnitReadin(n_vocab, dim)
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.GRUCell(dim, dim)
        self.readout = UnitReadout(n_vocab, dim, n_params)


class GRUSeq2Seq(NeuralBaseline):
    """GRU encoder over the context counts; GRU decoder whose input at bin t is the read-in
    of its own bin t-1 output (expected counts for `predict`/training, sampled counts for
    `sample`; bin -1 = the last context bin). See `NeuralBaseline` for the options."""

    name = "gru_seq2seq"

    def build(self, n_vocab: int, context: int, horizon: int) -> nn.Module:
        return _GRUNet(n_vocab, self.dim, self.likelihood.n_params)

    def _params(self, batch, generator=None, sample=False):
        net, units, mask = self.net, batch["units"], batch["unit_mask"]
        ctx = batch["context_counts"].float()
        _, h = net.encoder(net.readin(ctx, units, mask))
        h = h[0]
        prev = ctx[:, -1:]
        T = self._horizon(batch, self.horizon)
        params, fed = [], []
        for _ in range(T):
            h = net.decoder(net.readin(prev, units, mask)[:, 0], h)
            p = net.readout(h[:, None], units)  # (B, 1, N, P)
            prev = self.likelihood.sample(p, generator) if sample else self.likelihood.mean(p)
            params.append(p)
            fed.append(prev)
        return torch.cat(params, 1), torch.cat(fed, 1)
