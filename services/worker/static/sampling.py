"""Next tokens from logits, per row: argmax for greedy rows, seeded sampling for the rest.

Sampled rows apply temperature, then top-k, then top-p (transformers' order),
and pick with the Gumbel-max trick: ``argmax(logits / T + g)`` is a draw from
``softmax(logits / T)`` when ``g`` is Gumbel noise. The noise comes from a
counter-based hash of (seed, step, vocabulary index), computed in torch on
the logits' device: the noise a request sees at its ``t``-th token depends on
its seed and ``t`` only, never on which other requests share the batch or on
a generator's state. A seeded request therefore gives the same text alone and
in a busy batch, and on every run. Requests without a seed get a random one.
"""

from __future__ import annotations

import dataclasses
import secrets

import torch

_M32 = 0xFFFF_FFFF
# Odd multipliers below 2**31: an int64 product of a 32-bit value stays below 2**63.
_MIX_A = 0x7FEB352D
_MIX_B = 0x2C1B3C6D
_GOLDEN = 0x1E3779B9


def random_seed() -> int:
    """A seed for a request that did not ask for one."""
    return secrets.randbits(63)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (int64 tensors holding values in [0, 2**32))."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * _MIX_A) & _M32
    x = x ^ (x >> 15)
    x = (x * _MIX_B) & _M32
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, steps: torch.Tensor, *, vocab: int) -> torch.Tensor:
    """``[rows, vocab]`` floats in (0, 1), a pure function of (seed, step, index)."""
    key = hash32(seeds & _M32)
    key = hash32(key ^ ((seeds >> 32) & _M32))
    key = hash32(key ^ hash32((steps + _GOLDEN) & _M32))
    index = hash32(torch.arange(vocab, device=seeds.device, dtype=torch.int64) * 2 + 1)
    bits = hash32(key[:, None] ^ index[None, :]) >> 8  # 24 bits: exact in float32
    return (bits.to(torch.float32) + 0.5) / float(1 << 24)


def gumbel(seeds: torch.Tensor, steps: torch.Tensor, *, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise per (row, vocabulary index)."""
    return -torch.log(-torch.log(uniforms(seeds, steps, vocab=vocab)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowParams:
    """Sampling parameters of a batch, one entry per row, on the logits' device."""

    greedy: torch.Tensor  # bool
    temperature: torch.Tensor  # float32; 1.0 on greedy rows
    top_k: torch.Tensor  # int64; vocab size when off
    top_p: torch.Tensor  # float32; above 1 when off
    seeds: torch.Tensor  # int64
    steps: torch.Tensor  # int64: index of the token being drawn
    all_greedy: bool


def sample(logits: torch.Tensor, params: RowParams) -> torch.Tensor:
    """The next token of every row (``logits [rows, vocab]``)."""
    greedy = logits.argmax(dim=-1)
    if params.all_greedy:
        return greedy
    vocab = logits.shape[-1]
    # The best token shifted to 0 and T kept a normal float32: a tiny T (the API allows any
    # T > 0) then overflows the others to -inf, not every positive logit to +inf, whose
    # tie would pick whichever token sorted first.
    logits32 = logits.to(torch.float32)
    shifted = logits32 - logits32.amax(dim=-1, keepdim=True)
    scaled = shifted / params.temperature.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    ordered, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)
    in_top_k = rank[None, :] < params.top_k[:, None]
    ordered = ordered.masked_fill(~in_top_k, float("-inf"))
    probs = ordered.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the better-ranked tokens
    keep = in_top_k & (before < params.top_p[:, None])
    keep[:, 0] = True
    noise = gumbel(params.seeds, params.steps, vocab=vocab).gather(1, order)
    choice = (ordered + noise).masked_fill(~keep, float("-inf")).argmax(dim=-1)
    sampled = order.gather(1, choice[:, None]).squeeze(1)
    return torch.where(params.greedy, greedy, sampled)
