"""The cached rollout step replayed as one CUDA graph.

On a GPU a batch-1 rollout of the small model is bound by kernel launches and Python, not by
arithmetic: ~1.6 ms per bin on an H100, where the KV cache saves nothing (bench_model.py). A
CUDA graph records the step's kernels once and replays them with one launch. It reads and writes
fixed memory, so each rollout copies its inputs (the encoder's ``prep``, the fed-back counts, the
bin index) into the tensors the graph was recorded with; the KV caches are the graph's own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

MAX_GRAPHS = 4  # recorded graphs kept per model (one per batch shape and forecast length)


class GraphedStep:
    """``step(prep, prev, bin_t, caches) -> params`` recorded as a CUDA graph.

    Args:
        step: the model's cached decoding step (eager or ``torch.compile``d).
        prep: the encoder outputs it reads (a dict/list/tuple tree of CUDA tensors), used for
            shapes; later rollouts load theirs with ``load``.
        prev: (B, N) fed-back counts of the bin before the first.
        make_caches: builds the step's KV caches (one per decoder block).
    """

    def __init__(self, *, step: Callable, prep: dict, prev: torch.Tensor, make_caches: Callable):
        self.prep = tree_map(torch.clone, prep)
        self.prev = prev.clone()
        self.bin_t = torch.zeros(1, dtype=torch.long, device=prev.device)
        self.caches = make_caches()
        side = torch.cuda.Stream()  # warm-up (lazy inits, autotuning) must precede recording
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step(self.prep, self.prev, self.bin_t, self.caches)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(self.prep, self.prev, self.bin_t, self.caches)

    def load(self, prep: dict) -> None:
        """Copy this rollout's encoder outputs into the recorded inputs (same tree and shapes)."""
        for dst, src in zip(tree_flatten(self.prep)[0], tree_flatten(prep)[0], strict=True):
            dst.copy_(src)

    def __call__(self, prep: dict, prev: torch.Tensor, bin_t: torch.Tensor, caches=None) -> torch.Tensor:
        """Same signature as the step; ``prep`` and ``caches`` are the recorded ones (see load)."""
        self.prev.copy_(prev)
        self.bin_t.copy_(bin_t)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites self.out


def graph_key(model: torch.nn.Module, prep: dict, prev: torch.Tensor, n_steps: int, compiled: bool):
    """What a recorded graph depends on: the input shapes and dtypes, the forecast length, and
    where the weights live (a model moved to another device or re-allocated needs a new graph;
    in-place updates such as load_state_dict are seen by the old one)."""
    leaves = tree_flatten(prep)[0] + [prev]
    return (
        tuple((tuple(t.shape), t.dtype) for t in leaves), n_steps, compiled,
        tuple(p.data_ptr() for p in model.parameters()),
    )


def cached_graph(store: dict, key, build: Callable) -> GraphedStep:
    """``store[key]``, built on first use; the oldest graph goes once MAX_GRAPHS are kept."""
    if key not in store:
        if len(store) >= MAX_GRAPHS:
            store.pop(next(iter(store)))
        store[key] = build()
    return store[key]
