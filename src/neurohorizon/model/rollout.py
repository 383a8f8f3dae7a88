"""Free-running (autoregressive) forecasts: the KV cache and the rollout loop.

The encoder runs once per forecast. Each future bin is then decoded from the bins before it, and
its prediction (the expected counts, or counts sampled from the likelihood: the same rule as
scheduled-sampling training, ``model/feedback.py``) becomes the next bin's input. A KV cache per
decoder block keeps the past bins' keys and values, so one step decodes one bin. The step can run
eagerly, through ``torch.compile``, or replayed as a CUDA graph (``model/cuda_graph.py``).
"""

from __future__ import annotations

import torch

from neurohorizon.model.cuda_graph import GraphedStep, cached_graph, graph_key
from neurohorizon.model.feedback import FEEDBACK_MODES, WindowGenerators, feedback_counts


class KVCache:
    """Keys/values of past bins for one self-attention layer, in buffers of fixed length so a
    decoding step has the same shapes at every bin (what lets ``torch.compile`` reuse one graph).

    Args:
        shape: (B, H, max_len, Dh) of the buffers. dtype, device: those of the keys (bf16
            under autocast).
    """

    def __init__(self, shape: tuple, *, dtype: torch.dtype, device: torch.device):
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = torch.arange(shape[2], device=device)

    def append(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> tuple:
        """Store k, v (B, H, 1, Dh) at bin ``pos`` (1,) -> all keys, values and the (1, 1, 1,
        max_len) mask of bins <= pos; later slots hold stale or zero entries the mask hides."""
        self.k.index_copy_(2, pos, k)
        self.v.index_copy_(2, pos, v)
        return self.k, self.v, (self.slots <= pos).view(1, 1, 1, -1)


@torch.inference_mode()
def rollout(
    model,
    batch: dict,
    likelihood,
    *,
    n_steps: int,
    feedback: str = "mean",
    n_samples: int = 1,
    generator: torch.Generator | WindowGenerators | None = None,
    use_cache: bool = True,
    compile: bool = False,
    compile_chunk: int = 1,
    cuda_graph: bool = False,
) -> dict:
    """Free-running forecast of ``n_steps`` bins by ``model`` (a NeuroHorizon) without the future.

    Args:
        batch: a collated batch (``data/dataset.py``), on the model's device.
        likelihood: the count likelihood the model was trained with.
        n_steps: future bins T to forecast.
        feedback: "mean" feeds back ``likelihood.mean``; "sample" feeds back
            ``likelihood.sample(.., generator)``. Non-autoregressive decoders run one pass, and
            their "counts" are those samples or means.
        n_samples: S trajectories, run batched (sample-major).
        generator: seeds the sampled trajectories (reproducible for a given seed); a
            ``WindowGenerators`` gives each window its own stream, so its draws do not depend
            on the rest of the batch.
        use_cache: False recomputes every earlier bin at each step (the reference the cache is
            tested against).
        compile: run the cached step through ``torch.compile`` (one trace per batch shape, then
            lower latency for closed-loop use).
        compile_chunk: with ``compile`` and mean feedback, decode K bins per compiled call (the
            step unrolled K times, its fed-back means inside the graph): the per-call costs
            (guards, the wrapper's copies) are paid once per K bins. About 1.6x faster for K=10
            on a 2-core CPU (``benchmarks/bench_model.py``), for about K times the compile time.
        cuda_graph: (CUDA, cached) replay the step as a CUDA graph recorded once per batch shape
            and length: on a GPU a rollout is launch-bound, and the graph removes most of that.

    Call ``model.eval()`` first unless dropout noise is wanted.
    Returns dict(params (S, B, T, N, P), counts (S, B, T, N) fed-back values, mean (S, B, T, N)
    expected counts).
    """
    _check_rollout(model, likelihood, feedback, n_samples, n_steps)
    if compile_chunk < 1 or compile_chunk > 1 and not (compile and feedback == "mean" and use_cache and not cuda_graph):
        raise ValueError(f"compile_chunk={compile_chunk}: give 1, or K > 1 with compile=True, feedback='mean', "
                         "use_cache=True and cuda_graph=False")
    S = n_samples
    bins = model._bins(0, n_steps, batch["units"].device)
    prep = _repeat(model._prepare(batch), S)

    def emit(params):
        fed = feedback_counts(likelihood, params, feedback, generator).to(params.dtype)
        return (fed if feedback == "mean" else likelihood.mean(params)), fed

    if model.decoder != "autoregressive":
        params = model._decode(prep, bins)
        mean, counts = emit(params)
        return _split(S, params=params, counts=counts, mean=mean)

    prev = batch["context_counts"][:, -1].repeat(S, 1)  # (S*B, N)
    step, caches = _step_and_caches(model, prep, prev, n_steps, use_cache=use_cache, compile=compile,
                                    cuda_graph=cuda_graph)
    if compile_chunk > 1:
        params, mean = _chunked(model, likelihood, prep, prev, bins, caches, compile_chunk)
        return _split(S, params=params, counts=mean, mean=mean)
    inputs, out_params, out_mean, out_fed = [], [], [], []
    for t in range(n_steps):
        inputs.append(prev)
        if use_cache:
            params = step(prep, prev, bins[t : t + 1], caches)
        else:  # full recomputation over all bins so far (reference path)
            params = model._decode(prep, bins[: t + 1], torch.stack(inputs, dim=1), last_only=True)[:, 0]
        mean, prev = emit(params)
        out_params.append(params)
        out_mean.append(mean)
        out_fed.append(prev)
    return _split(S, params=torch.stack(out_params, 1), counts=torch.stack(out_fed, 1),
                  mean=torch.stack(out_mean, 1))


def _check_rollout(model, likelihood, feedback: str, n_samples: int, n_steps: int) -> None:
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {feedback!r}")
    if n_samples < 1 or n_steps < 1:
        raise ValueError("n_samples and n_steps must be >= 1")
    if likelihood.n_params != model.n_params:
        raise ValueError(f"likelihood has {likelihood.n_params} params, model {model.n_params}")


def _step_and_caches(model, prep: dict, prev: torch.Tensor, n_steps: int, *, use_cache: bool, compile: bool,
                     cuda_graph: bool) -> tuple:
    """The one-bin decoding step (eager, compiled or graphed) and its KV caches (None when the
    step is graphed, which owns its own, or without the cache)."""
    k0 = prep["lat_kv"][0][0]  # latent keys: the dtype self-attention keys will have

    def make_caches():
        return [KVCache((k0.shape[0], model.heads, n_steps, k0.shape[-1]), dtype=k0.dtype,
                        device=k0.device) for _ in model.blocks]

    step = _compiled_step(model) if compile else model._step
    if not cuda_graph:
        return step, make_caches() if use_cache else None
    if not use_cache or k0.device.type != "cuda":
        raise ValueError("cuda_graph=True needs a model on a CUDA device and use_cache=True")
    return _graphed_step(model, step, prep, prev, n_steps, make_caches, compile), None


def _graphed_step(model, step, prep: dict, prev: torch.Tensor, n_steps: int, make_caches, compiled: bool):
    """The CUDA-graph replay of ``step`` for these shapes (kept on the model), this rollout's prep loaded."""
    key = graph_key(model, prep, prev, n_steps, compiled)
    store = model.__dict__.setdefault("_cuda_graphs", {})
    graphed = cached_graph(store, key, lambda: GraphedStep(step=step, prep=prep, prev=prev,
                                                            make_caches=make_caches))
    graphed.load(prep)
    return graphed


def _chunked(model, likelihood, prep: dict, prev: torch.Tensor, bins: torch.Tensor, caches: list, chunk: int) -> tuple:
    """The mean-feedback rollout in compiled calls of ``chunk`` bins (the last call may be
    shorter) -> params (S*B, T, N, P) and fed-back means (S*B, T, N)."""
    params, means = [], []
    for t in range(0, len(bins), chunk):
        run = _compiled_chunk(model, likelihood, min(chunk, len(bins) - t))
        p, m = run(prep, prev, bins[t : t + chunk], caches)
        params.append(p)
        means.append(m)
        prev = m[:, -1]
    return torch.cat(params, 1), torch.cat(means, 1)


def _compiled_chunk(model, likelihood, k: int):
    """k cached steps with mean feedback, unrolled in one ``torch.compile`` graph (built once per
    model, device, likelihood and k): (prep, prev (B, N), bins (k,), caches) -> params
    (B, k, N, P), means (B, k, N)."""
    device = next(model.parameters()).device.type
    compiled = model.__dict__.setdefault("_compiled_chunks", {})
    key = (device, likelihood, k)
    if key not in compiled:
        def run(prep, prev, bins, caches):
            params, means = [], []
            for j in range(k):
                p = model._step(prep, prev, bins[j : j + 1], caches)
                prev = feedback_counts(likelihood, p, "mean").to(p.dtype)
                params.append(p)
                means.append(prev)
            return torch.stack(params, 1), torch.stack(means, 1)

        compiled[key] = torch.compile(run, options={"cpp_wrapper": device == "cpu"})
    return compiled[key]


def _compiled_step(model):
    """``model._step`` through torch.compile, built once per model and device type."""
    device = next(model.parameters()).device.type
    compiled = model.__dict__.setdefault("_compiled_steps", {})
    if device not in compiled:
        # on CPU the C++ wrapper saves ~0.1 ms of Python per step (bench_model.py)
        compiled[device] = torch.compile(model._step, options={"cpp_wrapper": device == "cpu"})
    return compiled[device]


def _repeat(prep: dict, S: int) -> dict:
    """Tile every batch-first tensor in prep S times along the batch (sample-major order)."""
    if S == 1:
        return prep

    def rep(x):
        return x.repeat(S, *([1] * (x.dim() - 1)))

    out = {k: rep(v) for k, v in prep.items() if k != "lat_kv"}
    out["lat_kv"] = [(rep(k), rep(v)) for k, v in prep["lat_kv"]]
    return out


def _split(S: int, **tensors: torch.Tensor) -> dict:
    """(S*B, ...) -> (S, B, ...)."""
    return {k: v.unflatten(0, (S, -1)) for k, v in tensors.items()}
