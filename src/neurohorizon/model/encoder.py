"""POYO-style spike encoder: every context spike is a token; a Perceiver cross-attention
compresses them into a few latents on a regular time grid, then self-attention refines them.

Built from torch_brain layers (RotaryCrossAttention, RotarySelfAttention, RotaryTimeEmbedding);
the unit embedding (InfiniteVocabEmbedding) is owned by the full model and shared with the decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch_brain.nn import RotaryCrossAttention, RotarySelfAttention, RotaryTimeEmbedding

# token types: a spike, and per-unit markers at the start / end of the context, so that a
# silent unit still leaves a trace (POYO does the same) and no row of the attention is empty.
SPIKE, UNIT_START, UNIT_END = 0, 1, 2

# The context length S changes with every batch. cuDNN attention builds an execution plan per
# shape, so on a GPU it re-planned at every step: training on an H100 ran 3.7x slower than with
# the kernels below, which need no plan (docs/performance.md, GPU). On a CPU this list changes nothing.
VARIABLE_LENGTH_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def rotary_cis(rotary: RotaryTimeEmbedding, times: torch.Tensor) -> torch.Tensor:
    """times (...) -> complex (..., Dh/2) unit phasors, the angles RotaryTimeEmbedding uses."""
    angles = times.float()[..., None] * rotary.omega
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """RotaryTimeEmbedding.rotate as one complex multiply (same maths: feature pairs
    (2j, 2j+1) turn by angle j). torch_brain's version builds rotate_half with stack/neg/cat,
    ~6 passes over x; on CPU this was a top hotspot for 2500 spike tokens (bench_model.py).
    x (..., Dh), cis broadcastable to (..., Dh/2), complex or its real view (..., Dh/2, 2)
    -> (..., Dh)."""
    if torch.compiler.is_compiling():  # inductor cannot fuse complex ops: same maths in reals
        x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        c, s = (cis.real, cis.imag) if cis.is_complex() else cis.unbind(-1)
        return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2).to(x.dtype)
    if not cis.is_complex():
        cis = torch.view_as_complex(cis)
    if x.stride(-1) != 1:
        x = x.contiguous()
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * cis).flatten(-2).to(x.dtype)


def heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H*Dh) -> (B, H, T, Dh)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def heads_merged(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, Dh) -> (B, T, H*Dh)."""
    return x.transpose(1, 2).flatten(-2)


class FeedForward(nn.Module):
    """Pre-norm MLP: (..., dim) -> (..., dim)."""

    def __init__(self, *, dim: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.GELU(),
            nn.Linear(dim * mult, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TokenTableCrossAttention(RotaryCrossAttention):
    """torch_brain's RotaryCrossAttention for contexts with few distinct token embeddings.

    A spike token is unit embedding + type embedding, so before the rotary time rotation its
    key/value depends on (unit, type) only. Normalising and projecting the U*3 distinct rows once
    and gathering them per token is exact (LayerNorm and Linear act per token) and replaces a
    (B*S, D) x (D, 2D) projection with a (3U, D) x (D, 2D) one: ~10x fewer encoder FLOPs at
    2500 spikes / 100 units. Equality with the parent ``forward`` is tested.
    """

    def forward_table(self, x_query, table, index, query_cis, context_cis, context_mask):
        """x_query (B, L, D); table (R, D) distinct context embeddings; index (B, S) row of each
        context token; query_cis (B or 1, L, Dh/2) and context_cis (B, S, Dh/2) rotary phasors
        (rotary_cis); context_mask (B, S) True = attend -> (B, L, D)."""
        q = rotate(heads_first(self.to_q(self.norm(x_query)), self.heads), query_cis[:, None])
        kv = self.to_kv(self.norm_context(table))[index]  # (B, S, 2*H*Dh)
        kv = kv.unflatten(-1, (2, self.heads, -1))  # (B, S, 2, H, Dh)
        if self.rotate_value:
            kv = rotate(kv, context_cis[:, :, None, None])
        else:
            kv = torch.stack([rotate(kv[:, :, 0], context_cis[:, :, None]), kv[:, :, 1]], 2)
        k, v = kv.transpose(1, 3).unbind(2)  # (B, H, S, Dh) each
        p = self.dropout if self.training else 0.0
        with sdpa_kernel(VARIABLE_LENGTH_ATTENTION):
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=context_mask[:, None, None], dropout_p=p
            )
        if self.rotate_value:  # undo the query-time rotation of the values (as torch_brain does)
            out = rotate(out, query_cis[:, None].conj())
        return self.to_out(heads_merged(out))


class SpikeEncoder(nn.Module):
    """Context spikes -> latents.

    Args:
        dim: model width D.
        heads: attention heads (head size D // heads).
        depth: self-attention layers over the latents.
        latent_step: spacing of the latent grid (s); latents sit at the centres of the
            ``latent_step`` intervals tiling [-context, 0).
        n_latents_per_step: learned latent embeddings repeated at every grid step.
        ffn_mult: FFN hidden size multiplier.
        dropout: dropout on attention weights and residual branches.
        rotary: shared RotaryTimeEmbedding (head size D // heads).
        n_event_types: kinds of task event (e.g. go cue) that can appear as context tokens.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        depth: int,
        latent_step: float,
        n_latents_per_step: int,
        ffn_mult: int,
        dropout: float,
        rotary: RotaryTimeEmbedding,
        n_event_types: int = 0,
    ):
        super().__init__()
        if latent_step <= 0:
            raise ValueError(f"latent_step must be > 0, got {latent_step}")
        self.latent_step = latent_step
        self.n_latents_per_step = n_latents_per_step
        self.rotary = rotary
        dim_head = dim // heads
        self.token_type_emb = nn.Embedding(3, dim)
        self.latent_emb = nn.Embedding(n_latents_per_step, dim)
        nn.init.normal_(self.token_type_emb.weight, std=0.02)
        nn.init.normal_(self.latent_emb.weight, std=0.02)
        # row 0 is padding; an event token is its type embedding at the event's time
        self.event_emb = nn.Embedding(n_event_types + 1, dim) if n_event_types else None
        if self.event_emb is not None:
            nn.init.normal_(self.event_emb.weight, std=0.02)
        self.cross_attn = TokenTableCrossAttention(
            dim=dim, heads=heads, dim_head=dim_head, dropout=dropout, rotate_value=True
        )
        self.cross_ffn = FeedForward(dim=dim, mult=ffn_mult, dropout=dropout)
        self.self_attn = nn.ModuleList(
            RotarySelfAttention(
                dim=dim, heads=heads, dim_head=dim_head, dropout=dropout, rotate_value=True
            )
            for _ in range(depth)
        )
        self.self_ffn = nn.ModuleList(
            FeedForward(dim=dim, mult=ffn_mult, dropout=dropout) for _ in range(depth)
        )
        self.drop = nn.Dropout(dropout)

    def latent_times(self, context: float, device: torch.device) -> torch.Tensor:
        """(L,) latent times; L = n_steps * n_latents_per_step, grid covers [-context, 0)."""
        n_steps = max(1, math.ceil(context / self.latent_step - 1e-6))
        centres = -context + (torch.arange(n_steps, device=device) + 0.5) * self.latent_step
        return centres.repeat_interleave(self.n_latents_per_step)

    def _tokens(self, unit_emb, spike_times, spike_units, spike_mask, units, unit_mask, context,
                event_times, event_types) -> tuple:
        """The context tokens as rows of a table of distinct embeddings: table (R, D), and per
        token (B, S + 2N [+ E]) its row, time and mask."""
        B, N = units.shape
        # token = unit embedding + token type; spikes first, then per-unit start/end markers
        tok_units = torch.cat([spike_units, units, units], dim=1)  # (B, S + 2N)
        types = torch.cat(
            [
                torch.full_like(spike_units, SPIKE),
                torch.full_like(units, UNIT_START),
                torch.full_like(units, UNIT_END),
            ],
            dim=1,
        )
        times = torch.cat(
            [
                spike_times,
                torch.full((B, N), -context, dtype=spike_times.dtype, device=units.device),
                torch.zeros((B, N), dtype=spike_times.dtype, device=units.device),
            ],
            dim=1,
        )
        mask = torch.cat([spike_mask, unit_mask, unit_mask], dim=1)
        # distinct (unit, type) token embeddings: table (3U, D), index (B, S + 2N)
        uniq, inv = torch.unique(tok_units, return_inverse=True)
        table = (unit_emb(uniq).unsqueeze(1) + self.token_type_emb.weight).flatten(0, 1)  # (3U, D)
        index = inv * 3 + types
        if self.event_emb is not None:  # event rows follow the unit rows of the table
            index = torch.cat([index, event_types + table.shape[0]], dim=1)
            table = torch.cat([table, self.event_emb.weight])
            times = torch.cat([times, event_times.to(times.dtype)], dim=1)
            mask = torch.cat([mask, event_types > 0], dim=1)
        return table, index, times, mask

    def forward(
        self,
        *,
        unit_emb: nn.Module,
        spike_times: torch.Tensor,
        spike_units: torch.Tensor,
        spike_mask: torch.Tensor,
        units: torch.Tensor,
        unit_mask: torch.Tensor,
        context: float,
        event_times: torch.Tensor | None = None,
        event_types: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """spike_* (B, S), units/unit_mask (B, N), context duration (s); event_times and
        event_types (B, E) (type 0 = padding) when the encoder has event types.

        Returns latents (B, L, D) and their times (L,).
        """
        B = units.shape[0]
        table, index, times, mask = self._tokens(unit_emb, spike_times, spike_units, spike_mask, units, unit_mask,
                                                 context, event_times, event_types)
        lat_t = self.latent_times(context, units.device)  # (L,)
        lat_idx = torch.arange(lat_t.shape[0], device=units.device) % self.n_latents_per_step
        latents = self.latent_emb(lat_idx).unsqueeze(0).expand(B, -1, -1)  # (B, L, D)
        lat_rot = self.rotary(lat_t).unsqueeze(0).expand(B, -1, -1)
        latents = latents + self.cross_attn.forward_table(
            latents,
            table,
            index,
            rotary_cis(self.rotary, lat_t)[None],
            rotary_cis(self.rotary, times),
            mask,
        )
        latents = latents + self.cross_ffn(latents)
        for attn, ffn in zip(self.self_attn, self.self_ffn):
            latents = latents + self.drop(attn(latents, lat_rot))
            latents = latents + ffn(latents)
        return latents, lat_t
