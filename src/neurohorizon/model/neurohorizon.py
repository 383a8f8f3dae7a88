"""NeuroHorizon: POYO spike encoder + count decoder forecasting future binned spiking.

Data flow (shapes: B batch, S spikes, N units, Tc context bins, T future bins, D width, P params):

    context spikes (B, S) --SpikeEncoder--> latents (B, L, D)
    decoder tokens (B, T, D) --[self-attn over bins, cross-attn to latents, FFN] x depth_dec--> (B, T, D)
    readout: bin state x unit embedding --> likelihood params (B, T, N, P)

Decoder variants:
    "autoregressive": token t is built from the population counts of bin t-1 (teacher forcing in
        ``forward``, the model's own output in ``rollout``); causal self-attention.
    "parallel":       learned bin queries, bidirectional self-attention, no feedback.
    "causal":         learned bin queries, causal self-attention, no feedback.

Units are keyed by global id through one InfiniteVocabEmbedding shared by encoder, decoder input
and readout, so any set of neurons (from any session) can be encoded and forecast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_brain.nn import InfiniteVocabEmbedding, RotaryCrossAttention, RotaryTimeEmbedding

from neurohorizon.model.encoder import (
    FeedForward,
    SpikeEncoder,
    heads_first,
    heads_merged,
    rotary_cis,
    rotate,
)
from neurohorizon.model.rollout import KVCache, rollout

DECODERS = ("autoregressive", "parallel", "causal")
BATCH_KEYS = ("spike_times", "spike_units", "spike_mask", "context_counts", "units", "unit_mask")


class CausalSelfAttention(nn.Module):
    """Pre-norm self-attention over bins with rotary bin times and an optional KV cache.

    Own layer instead of torch_brain's RotarySelfAttention because that one only takes a
    (B, N) key-padding mask (no causal mask) and recomputes every key on each call, so it can
    neither be causal nor decode incrementally; benchmarks/bench_model.py records the rollout
    speed-up this buys (cached vs full recomputation).
    """

    def __init__(self, *, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, cis: torch.Tensor, causal: bool, cache: KVCache | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), cis (T, Dh/2) rotary phasors of the bins in x -> (B, T, D).

        With ``cache``, x holds bin ``pos`` (1,) only and attends to it and every earlier bin.
        """
        qkv = self.to_qkv(self.norm(x)).unflatten(-1, (3, self.heads, -1))  # (B, T, 3, H, Dh)
        qk = rotate(qkv[:, :, :2], cis[:, None, None])  # q and k in one multiply
        q, k = qk.transpose(1, 3).unbind(2)  # (B, H, T, Dh)
        v = qkv[:, :, 2].transpose(1, 2)
        mask = None
        if cache is not None:
            if x.shape[1] != 1:
                raise ValueError("cached decoding takes one bin at a time")
            k, v, mask = cache.append(k, v, pos)
            causal = False  # the mask already hides the future
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.to_out(heads_merged(out))


class LatentCrossAttention(RotaryCrossAttention):
    """torch_brain's RotaryCrossAttention (rotate_value=False), split so the latent keys/values
    are computed once per forecast instead of once per decoded bin. Same weights and maths as
    the parent's ``forward`` (checked in tests/test_model.py)."""

    def context_kv(self, latents: torch.Tensor, cis: torch.Tensor) -> tuple:
        """latents (B, L, D), cis (L, Dh/2) -> rotated keys and values, each (B, H, L, Dh)."""
        kv = self.to_kv(self.norm_context(latents)).chunk(2, -1)
        k, v = (heads_first(t, self.heads) for t in kv)
        return rotate(k, cis), v

    def attend(self, x: torch.Tensor, cis: torch.Tensor, kv: tuple) -> torch.Tensor:
        """x (B, T, D), cis (T, Dh/2) -> (B, T, D)."""
        q = rotate(heads_first(self.to_q(self.norm(x)), self.heads), cis)
        p = self.dropout if self.training else 0.0
        return self.to_out(heads_merged(F.scaled_dot_product_attention(q, *kv, dropout_p=p)))


class DecoderBlock(nn.Module):
    def __init__(self, *, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.self_attn = CausalSelfAttention(dim=dim, heads=heads, dropout=dropout)
        self.cross_attn = LatentCrossAttention(
            dim=dim, heads=heads, dim_head=dim // heads, dropout=dropout, rotate_value=False
        )
        self.ffn = FeedForward(dim=dim, mult=ffn_mult, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cis, lat_kv, causal, cache=None, pos=None):
        x = x + self.drop(self.self_attn(x, cis, causal, cache, pos))
        x = x + self.drop(self.cross_attn.attend(x, cis, lat_kv))
        return x + self.ffn(x)


def _check_shape(decoder: str, n_params: int, unit_only_params: int, dim: int, heads: int) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if not 0 <= unit_only_params < n_params:
        raise ValueError(f"need 0 <= unit_only_params < n_params={n_params}")
    if dim % heads or (dim // heads) % 2:
        raise ValueError(f"dim={dim} must split into {heads} heads of even size")


class NeuroHorizon(nn.Module):
    """Spike forecaster. All arguments are keyword-only.

    Args:
        unit_ids: global unit ids ("session/unit") in vocabulary order: id ``unit_ids[i]`` has
            integer index i + 1 in batches (index 0 is padding, as in ``UnitVocab``).
        n_params: P, likelihood parameters per (bin, unit) (``likelihood.n_params``).
        unit_only_params: the last k of the P params depend on the unit embedding only (e.g. a
            per-neuron dispersion); 0 <= k < P.
        decoder: "autoregressive" | "parallel" | "causal".
        dim: width D. heads: attention heads (D % heads == 0, head size even).
        depth_enc: encoder self-attention layers. depth_dec: decoder layers.
        latent_step: encoder latent grid spacing (s). n_latents_per_step: latents per grid step.
        ffn_mult: FFN expansion. dropout: dropout probability.
        bin_size: bin width (s); context length = context_counts.shape[1] * bin_size.
        max_bins: longest forecast (learned bin-position table size).
        readout_dim: hidden width R of the (bin, unit) readout MLP (default D // 2).
        t_min, t_max: shortest / longest period of the rotary time embedding (s).
        event_names: task events (e.g. ("target_on", "go_cue")) given as context tokens; batches
            then carry ``event_times`` / ``event_types`` (B, E), type i + 1 = event_names[i].
        rate_prior: batches carry ``prior_counts`` (B, T, N), prior expected counts of the future
            bins (e.g. the condition's PSTH, data/prior.py); their log is added to param 0 (a
            log-rate), so the model forecasts the deviation from the prior.
    """

    def __init__(
        self,
        *,
        unit_ids: Sequence[str],
        n_params: int,
        unit_only_params: int = 0,
        decoder: str = "autoregressive",
        dim: int = 64,
        heads: int = 4,
        depth_enc: int = 1,
        depth_dec: int = 1,
        latent_step: float = 0.05,
        n_latents_per_step: int = 4,
        ffn_mult: int = 4,
        dropout: float = 0.0,
        bin_size: float = 0.02,
        max_bins: int = 128,
        readout_dim: int | None = None,
        t_min: float = 1e-4,
        t_max: float = 4.0,
        event_names: Sequence[str] = (),
        rate_prior: bool = False,
    ):
        super().__init__()
        _check_shape(decoder, n_params, unit_only_params, dim, heads)
        self.decoder, self.n_params, self.unit_only_params = decoder, n_params, unit_only_params
        self.bin_size, self.max_bins, self.heads = bin_size, max_bins, heads
        self.event_names = tuple(event_names)
        self.rate_prior = rate_prior
        dim_head = dim // heads

        self.unit_emb = InfiniteVocabEmbedding(dim)
        self.unit_emb.initialize_vocab(list(unit_ids))
        if self.unit_emb.tokenizer(list(unit_ids)) != list(range(1, len(unit_ids) + 1)):
            raise ValueError("unit vocabulary indices do not match unit_ids order")
        self.rotary = RotaryTimeEmbedding(
            head_dim=dim_head, rotate_dim=dim_head // 2, t_min=t_min, t_max=t_max
        )
        self.encoder = SpikeEncoder(
            dim=dim,
            heads=heads,
            depth=depth_enc,
            latent_step=latent_step,
            n_latents_per_step=n_latents_per_step,
            ffn_mult=ffn_mult,
            dropout=dropout,
            rotary=self.rotary,
            n_event_types=len(self.event_names),
        )
        self._build_decoder(dim=dim, heads=heads, depth=depth_dec, ffn_mult=ffn_mult, dropout=dropout)
        self._build_readout(dim=dim, readout_dim=readout_dim or dim // 2, n_units=len(unit_ids))

    def _build_decoder(self, *, dim: int, heads: int, depth: int, ffn_mult: int, dropout: float) -> None:
        """Bin phasors, the decoder's input (fed-back counts or a learned query) and its blocks."""
        # rotary phasors of every future bin centre, as a real (max_bins, Dh/2, 2) table: a
        # decoding step indexes it instead of computing complex phasors (which inductor cannot
        # compile) per bin
        centres = (torch.arange(self.max_bins).float() + 0.5) * self.bin_size
        self.register_buffer(
            "bin_phasors", torch.view_as_real(rotary_cis(self.rotary, centres)), persistent=False
        )
        # decoder input: AR tokens from fed-back counts; otherwise one learned query
        self.bin_pos = nn.Embedding(self.max_bins, dim)
        nn.init.normal_(self.bin_pos.weight, std=0.02)
        if self.decoder == "autoregressive":
            # features per (bin, unit): log1p(c), 1 - exp(-c), 1 (unit present); each feature
            # gets its own projection of the unit embedding, summed over units.
            self.count_proj = nn.Linear(dim, 3 * dim, bias=False)
            self.count_mlp = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
            )
        else:
            self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(
            DecoderBlock(dim=dim, heads=heads, ffn_mult=ffn_mult, dropout=dropout)
            for _ in range(depth)
        )

    def _build_readout(self, *, dim: int, readout_dim: int, n_units: int) -> None:
        """params = W_o gelu(W_h h_t + W_u e_n) (+ unit-only params) + a per-unit bias."""
        n_shared = self.n_params - self.unit_only_params
        self.norm_out = nn.LayerNorm(dim)
        self.ro_bin = nn.Linear(dim, readout_dim)
        self.ro_unit = nn.Linear(dim, readout_dim, bias=False)
        self.ro_out = nn.Linear(readout_dim, n_shared)
        self.ro_unit_only = nn.Linear(dim, self.unit_only_params) if self.unit_only_params else None
        # per-unit output bias: each neuron's baseline (e.g. log mean rate) without the MLP
        self.unit_bias = nn.Embedding(n_units + 1, n_shared)
        nn.init.zeros_(self.unit_bias.weight)

    @torch.no_grad()
    def init_unit_bias(self, values: torch.Tensor, param: int = 0) -> None:
        """Start output param `param` of every unit at `values` (V,), indexed like batches.

        Starting the log-rate at each neuron's training log mean rate spares the first
        hundreds of steps of learning 100 baseline rates through the readout MLP.
        """
        self.unit_bias.weight[:, param] = values.to(self.unit_bias.weight)

    @torch.no_grad()
    def start_at_prior(self) -> None:
        """Zero the readout's log-rate output, so that until training moves it the model forecasts
        exactly its rate prior (``rate_prior``): a random readout starts 0.002-0.01 bits/spike
        below the prior on reach, and the first few hundred steps only undo that."""
        self.ro_out.weight[0].zero_()
        self.ro_out.bias[0].zero_()

    @property
    def decoder_kind(self) -> str:
        """ "autoregressive" | "parallel" | "causal" (read by evaluation code)."""
        return self.decoder

    # ------------------------------------------------------------------ shared pieces
    def _check(self, batch: dict) -> None:
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"NeuroHorizon batch is missing keys {missing}")
        if self.event_names and "event_types" not in batch:
            raise KeyError(f"this model is conditioned on events {list(self.event_names)}: "
                           "the batch needs event_times and event_types")
        if self.rate_prior and "prior_counts" not in batch:
            raise KeyError("this model forecasts around a rate prior: the batch needs prior_counts (B, T, N)")
        n_vocab = len(self.unit_emb.vocab)
        checks = {  # message -> bad?, fetched from the device in one transfer (one GPU sync, not six)
            f"batch[{key!r}] has indices outside the model vocabulary [0, {n_vocab})":
                ((batch[key] >= n_vocab) | (batch[key] < 0)).any()
            for key in ("units", "spike_units")}
        if self.event_names:
            checks[f"batch['event_types'] exceeds the model's {len(self.event_names)} event types"] = (
                batch["event_types"] > len(self.event_names)).any()
        checks["every batch row needs at least one real unit (unit_mask)"] = ~batch["unit_mask"].any(dim=1).all()
        bad = torch.stack(list(checks.values())).tolist()
        for message, failed in zip(checks, bad):
            if failed:
                raise ValueError(message)

    def _prepare(self, batch: dict) -> dict:
        """Everything the decoder needs that does not depend on the future bins."""
        self._check(batch)
        units, unit_mask = batch["units"], batch["unit_mask"]
        context = batch["context_counts"].shape[1] * self.bin_size
        latents, lat_t = self.encoder(
            unit_emb=self.unit_emb,
            spike_times=batch["spike_times"],
            spike_units=batch["spike_units"],
            spike_mask=batch["spike_mask"],
            units=units,
            unit_mask=unit_mask,
            context=context,
            event_times=batch.get("event_times"),
            event_types=batch.get("event_types"),
        )
        lat_cis = rotary_cis(self.rotary, lat_t)
        emb = self.unit_emb(units)  # (B, N, D)
        prep = {
            "lat_kv": [b.cross_attn.context_kv(latents, lat_cis) for b in self.blocks],
            "ro_unit": self.ro_unit(emb).unsqueeze(1),  # (B, 1, N, R)
            "unit_bias": self.unit_bias(units).unsqueeze(1),  # (B, 1, N, P')
            "unit_mask": unit_mask,
        }
        if self.ro_unit_only is not None:
            prep["unit_only"] = self.ro_unit_only(emb).unsqueeze(1)  # (B, 1, N, k)
        if self.rate_prior:
            prep["log_prior"] = torch.log(batch["prior_counts"].clamp_min(1e-4))  # (B, T, N)
        if self.decoder == "autoregressive":
            # per-unit projections, zero for padding units, scaled by 1/sqrt(N_valid) so the
            # token size does not grow with N; the constant feature's sum is precomputed
            n_valid = unit_mask.sum(1).clamp(min=1).float()
            scale = unit_mask.float() / n_valid.sqrt()[:, None]  # (B, N)
            proj = self.count_proj(emb).unflatten(-1, (3, -1)) * scale[:, :, None, None]
            prep["count_proj"] = proj[:, :, :2].flatten(1, 2)  # (B, N*2, D)
            prep["count_const"] = proj[:, :, 2].sum(1, keepdim=True)  # (B, 1, D)
        return prep

    def _bins(self, start: int, stop: int, device) -> torch.Tensor:
        """(T,) indices of future bins start..stop-1, checked against the position table."""
        if stop > self.max_bins:
            raise ValueError(f"forecast of {stop} bins exceeds max_bins={self.max_bins}")
        return torch.arange(start, stop, device=device)

    def _bin_cis(self, bins: torch.Tensor) -> torch.Tensor:
        """Rotary phasors of the centres of future bins (T,), as real pairs: (T, Dh/2, 2)."""
        return self.bin_phasors.index_select(0, bins)

    def _tokens(self, prep: dict, prev: torch.Tensor | None, bins: torch.Tensor) -> torch.Tensor:
        """Decoder input for future bins (T,): (B, T, D). prev (B, T, N): counts of bin t-1."""
        pos = self.bin_pos(bins)
        if self.decoder != "autoregressive":
            B = prep["unit_mask"].shape[0]
            return (self.query + pos).unsqueeze(0).expand(B, -1, -1)
        feats = torch.stack([torch.log1p(prev), -torch.expm1(-prev)], dim=-1)
        x = torch.baddbmm(prep["count_const"], feats.flatten(2), prep["count_proj"])  # (B, T, D)
        return self.count_mlp(x) + pos

    def _readout(self, prep: dict, h: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """h (B, T, D) of future bins (T,) -> params (B, T, N, P)."""
        z = F.gelu(self.ro_bin(self.norm_out(h)).unsqueeze(2) + prep["ro_unit"])
        params = self.ro_out(z) + prep["unit_bias"]
        if "log_prior" in prep:  # forecast the deviation from the prior's log-rate
            offset = prep["log_prior"].index_select(1, bins).to(params.dtype)
            params = torch.cat([params[..., :1] + offset.unsqueeze(-1), params[..., 1:]], -1)
        if self.ro_unit_only is not None:
            params = torch.cat([params, prep["unit_only"].expand(*params.shape[:3], -1)], -1)
        return params

    def _decode(self, prep: dict, bins: torch.Tensor, prev: torch.Tensor | None = None,
                caches=None, last_only: bool = False) -> torch.Tensor:
        """Future bins (T,) (fed-back counts prev (B, T, N) for the autoregressive decoder)
        -> params (B, T, N, P), or (B, 1, N, P) of the last bin with ``last_only``. With
        ``caches`` (one KVCache per block) bins holds one bin."""
        causal = self.decoder != "parallel"
        x, cis = self._tokens(prep, prev, bins), self._bin_cis(bins)
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            x = block(x, cis, prep["lat_kv"][i], causal, cache, bins)
        if last_only:
            x, bins = x[:, -1:], bins[-1:]
        return self._readout(prep, x, bins)

    def _step(self, prep: dict, prev: torch.Tensor, bin_t: torch.Tensor, caches) -> torch.Tensor:
        """One cached rollout step: prev (B, N) counts of bin t-1, bin_t (1,) -> (B, N, P).

        Shapes do not depend on t, so ``torch.compile`` traces it once per (B, N).
        """
        return self._decode(prep, bin_t, prev[:, None], caches)[:, 0]

    # ------------------------------------------------------------------ public API
    def forward(
        self, batch: dict, future_inputs: torch.Tensor | None = None, *, n_steps: int | None = None
    ) -> torch.Tensor:
        """Teacher-forced forecast.

        future_inputs (B, T, N): counts fed back for future bins 0..T-1 (usually target_counts);
        token t sees bin t-1, bin -1 being the last context bin. Required by the autoregressive
        decoder; the other decoders only use its length T (or ``n_steps``).
        Returns params (B, T, N, P).
        """
        if future_inputs is not None:
            T = future_inputs.shape[1]
            if future_inputs.shape[0::2] != batch["units"].shape:
                raise ValueError(
                    f"future_inputs {tuple(future_inputs.shape)} does not match units "
                    f"{tuple(batch['units'].shape)} as (B, T, N)"
                )
        elif self.decoder == "autoregressive":
            raise ValueError("the autoregressive decoder needs future_inputs (B, T, N)")
        elif n_steps is None:
            raise ValueError("give future_inputs or n_steps")
        else:
            T = n_steps
        prep = self._prepare(batch)
        prev = None
        if self.decoder == "autoregressive":
            last = batch["context_counts"][:, -1:]
            prev = torch.cat([last, future_inputs[:, :-1]], dim=1)
        return self._decode(prep, self._bins(0, T, _device(batch)), prev)

    def rollout(self, batch: dict, likelihood, **options) -> dict:
        """Free-running forecast without ground-truth future (``model/rollout.py``): the
        encoder runs once, then each bin's prediction is fed back as the next bin's input.
        Options: n_steps, feedback, n_samples, generator, use_cache, compile, compile_chunk, cuda_graph.
        Returns dict(params (S, B, T, N, P), counts (S, B, T, N), mean (S, B, T, N)).
        """
        return rollout(self, batch, likelihood, **options)


def _device(batch: dict) -> torch.device:
    return batch["units"].device
