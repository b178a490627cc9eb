"""The forward pass over the static cache: prefill chunks and decode steps.

One function body serves both: rows of tokens at given positions write their
keys and values into the cache, then attend over the cache's first
``kv_len`` positions with a boolean mask (key ``j`` is visible to a query at
position ``p`` when ``j <= p``). Masks keep the shapes fixed, which is what
lets a decode step be captured once per padded batch and replayed as a CUDA
graph (``services.worker.static.graphs``); on a CPU the same code runs
eagerly.

Grouped-query attention is folded into the query length: the ``heads /
kv_heads`` query heads that share a KV head become extra query rows of that
head, so SDPA reads each cached key once and nothing is repeated in memory.

The arithmetic follows transformers' Llama (RMSNorm in float32, RoPE from
the same table, SiLU-gated MLP), so greedy outputs match ``model.generate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from services.worker.static.cache import KVCache
from services.worker.static.weights import LlamaWeights

KV_BUCKET_MIN = 64


def batch_buckets(slots: int) -> list[int]:
    """Padded decode batch sizes: 1, 2, 4, ... and ``slots`` itself."""
    sizes, size = [], 1
    while size < slots:
        sizes.append(size)
        size *= 2
    return [*sizes, slots]


def kv_buckets(slot_len: int, *, smallest: int = KV_BUCKET_MIN) -> list[int]:
    """Attended cache lengths: ``smallest``, doubling, and ``slot_len`` itself.

    A decode step reads only the first ``kv_len`` positions of each slot, so
    short requests do not pay for the longest one the cache could hold.
    """
    sizes, size = [], smallest
    while size < slot_len:
        sizes.append(size)
        size *= 2
    return [*sizes, slot_len]


def bucket_for(need: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``need``."""
    for size in buckets:
        if size >= need:
            return size
    raise ValueError(f"{need} exceeds the largest bucket {buckets[-1]}")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm, to the bit."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Step:
    """The model's forward over a ``KVCache``; holds no request state."""

    def __init__(self, *, weights: LlamaWeights, cache: KVCache) -> None:
        self.weights = weights
        self.cache = cache
        self.cos, self.sin = weights.rope_table(length=cache.slot_len + 1)
        self.rows = torch.arange(cache.slots, device=weights.device)
        self.rep = weights.heads // weights.kv_heads
        self.scale = weights.head_dim**-0.5

    def prefill(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        *,
        slots: torch.Tensor,
        last: torch.Tensor,
        kv_len: int,
    ) -> torch.Tensor:
        """Write ``tokens [R, T]`` of slots ``slots [R]`` into the cache; logits at ``last [R]``.

        Padding tokens take position ``cache.scratch``; ``last`` is each row's
        final real token, whose logits give the request its next token.
        """
        return self._forward(tokens, positions, slots=slots, pick=last, kv_len=kv_len)

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, *, kv_len: int) -> torch.Tensor:
        """One token for each of slots ``0 .. B-1`` (``tokens [B]``); logits ``[B, vocab]``.

        Rows whose slot is not decoding take position ``cache.scratch``.
        """
        tokens, positions = tokens[:, None], positions[:, None]
        return self._forward(tokens, positions, slots=None, pick=None, kv_len=kv_len)

    def _forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        *,
        slots: torch.Tensor | None,
        pick: torch.Tensor | None,
        kv_len: int,
    ) -> torch.Tensor:
        w, cache = self.weights, self.cache
        rows, length = tokens.shape
        heads, kv_heads, dim, rep = w.heads, w.kv_heads, w.head_dim, self.rep
        x = F.embedding(tokens, w.embed)
        cos = self.cos[positions].unsqueeze(2)  # [R, T, 1, dim]
        sin = self.sin[positions].unsqueeze(2)
        visible = torch.arange(kv_len, device=tokens.device) <= positions[:, :, None]  # [R, T, L]
        mask = visible[:, None, None].expand(rows, 1, rep, length, kv_len)
        mask = mask.reshape(rows, 1, rep * length, kv_len)
        where = self.rows[:rows] if slots is None else slots
        for i, layer in enumerate(w.layers):
            h = _rms_norm(x, layer.attn_norm, w.eps)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            q, k, v = qkv.split((heads * dim, kv_heads * dim, kv_heads * dim), dim=-1)
            q = q.view(rows, length, heads, dim)
            k = k.view(rows, length, kv_heads, dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = cache.k[i], cache.v[i]  # [slots, kv_heads, slot_len + 1, dim]
            keys[where[:, None], :, positions] = k
            values[where[:, None], :, positions] = v.view(rows, length, kv_heads, dim)
            if slots is None:  # decode: rows are slots 0 .. R-1, a view, no copy
                keys, values = keys[:rows, :, :kv_len], values[:rows, :, :kv_len]
            else:
                keys = keys[:, :, :kv_len].index_select(0, slots)
                values = values[:, :, :kv_len].index_select(0, slots)
            q = q.view(rows, length, kv_heads, rep, dim).permute(0, 2, 3, 1, 4)
            q = q.reshape(rows, kv_heads, rep * length, dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
            out = out.view(rows, kv_heads, rep, length, dim).permute(0, 3, 1, 2, 4)
            x = x + F.linear(out.reshape(rows, length, heads * dim), layer.o, layer.o_bias)
            h = _rms_norm(x, layer.mlp_norm, w.eps)
            gate, up = F.linear(h, layer.gate_up, layer.gate_up_bias).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down, layer.down_bias)
        if pick is None:
            x = x[:, -1]
        else:
            x = x[torch.arange(rows, device=x.device), pick]
        return F.linear(_rms_norm(x, w.norm, w.eps), w.lm_head)
