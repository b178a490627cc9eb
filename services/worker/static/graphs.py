"""Decode steps as CUDA graphs: one per (padded batch, attended length) bucket.

Without graphs, a decode step of a small model on a fast GPU is all host
overhead: hundreds of kernel launches, each a few microseconds of Python and
driver, for a few microseconds of work. A graph replays the whole step with
one launch. Graphs need fixed shapes and fixed addresses, which is why the
cache is static, the inputs are copied into buffers the graphs read, and the
batch is padded to a bucket (1, 2, 4, ... slots) and the attended cache
length to another (64, 128, ... slot length).

Everything is captured at warm-up, sharing one memory pool. On a CPU, or with
``TINYLLAMA_CUDA_GRAPHS=off``, the same ``Step.decode`` runs eagerly.
"""

from __future__ import annotations

import logging
import time

import torch

from services.worker.static.step import Step, batch_buckets, bucket_for, kv_buckets

log = logging.getLogger("tinyllama.worker.static")


class Decoder:
    """``decode(tokens, positions)`` for the slots ``0 .. B-1``, graphed where it can be."""

    def __init__(self, step: Step, *, use_graphs: bool) -> None:
        self.step = step
        cache = step.cache
        self.batch_buckets = batch_buckets(cache.slots)
        self.kv_buckets = kv_buckets(cache.slot_len)
        self.use_graphs = use_graphs and step.weights.device.type == "cuda"
        device = step.weights.device
        # The graphs' inputs: fixed addresses, refilled before each replay.
        self.tokens = torch.zeros(cache.slots, dtype=torch.long, device=device)
        self.positions = torch.full((cache.slots,), cache.scratch, dtype=torch.long, device=device)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def buckets(self, *, rows: int, longest: int) -> tuple[int, int]:
        """(padded batch, attended length) for ``rows`` slots whose longest needs ``longest``."""
        return bucket_for(rows, self.batch_buckets), bucket_for(longest, self.kv_buckets)

    def capture(self) -> None:
        """Capture every bucket (largest first, so the pool is sized once); CUDA only."""
        if not self.use_graphs or not torch.cuda.is_available():
            return
        started = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        scratch = self.step.cache.scratch
        self.positions.fill_(scratch)  # capture runs write only to the scratch position
        self.tokens.zero_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up runs: lazy init (cuBLAS handles, kernels) off the graph
                self.step.decode(self.tokens, self.positions, kv_len=self.kv_buckets[0])
        torch.cuda.current_stream().wait_stream(side)
        for batch in reversed(self.batch_buckets):
            for kv_len in reversed(self.kv_buckets):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self.step.decode(
                        self.tokens[:batch], self.positions[:batch], kv_len=kv_len
                    )
                self.graphs[(batch, kv_len)] = (graph, out)
        torch.cuda.synchronize()
        log.info(
            "captured %d decode graphs in %.1f s (batches %s, lengths %s)",
            len(self.graphs),
            time.perf_counter() - started,
            self.batch_buckets,
            self.kv_buckets,
        )

    def decode(self, tokens: list[int], positions: list[int], *, kv_len: int) -> torch.Tensor:
        """Logits ``[B, vocab]`` for padded rows (``len(tokens)`` is a batch bucket)."""
        batch = len(tokens)
        graphed = self.graphs.get((batch, kv_len))
        if graphed is None:
            device = self.tokens.device
            return self.step.decode(
                torch.tensor(tokens, device=device),
                torch.tensor(positions, device=device),
                kv_len=kv_len,
            )
        graph, out = graphed
        self.tokens[:batch].copy_(torch.tensor(tokens), non_blocking=True)
        self.positions[:batch].copy_(torch.tensor(positions), non_blocking=True)
        graph.replay()
        return out
