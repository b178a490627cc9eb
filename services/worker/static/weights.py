"""The tensors of a loaded ``LlamaForCausalLM``, fused for our forward pass.

Loading, dtype and device stay transformers' (``services.worker.loading``):
we only take the weights out of the model it built. Q, K and V become one
matrix, and so do gate and up, so a layer is four matmuls instead of seven.
The model's own linears are then pointed at row slices of the fused
matrices, so the weights are not held twice and ``model.generate`` still
works on the very same numbers.

RoPE comes from the model's rotary module (``inv_freq`` and
``attention_scaling``, built by transformers' ``ROPE_INIT_FUNCTIONS``), so
every static rope type (default, linear, llama3, yarn, ...) matches; the ones
whose frequencies change with the sequence length (dynamic, longrope) are
refused, and ``auto`` then serves the model with transformers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from services.worker.loading import ModelLoadError

_GROWING_ROPE = ("dynamic", "longrope")  # inv_freq recomputed per sequence length


class UnsupportedModel(ModelLoadError):
    """The model is not a Llama our static engine can serve; the message says why.

    A ``ModelLoadError``, so ``python -m services.worker`` exits with the message.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerWeights:
    """One decoder layer: norms, fused QKV, output projection, fused gate/up, down."""

    attn_norm: torch.Tensor
    qkv: torch.Tensor  # [(heads + 2 * kv_heads) * head_dim, hidden]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 * intermediate, hidden]: gate rows, then up rows
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaWeights:
    """Everything the forward pass reads, plus the shapes it needs."""

    layers: tuple[LayerWeights, ...]
    embed: torch.Tensor
    norm: torch.Tensor
    lm_head: torch.Tensor  # the embedding itself when the checkpoint ties them
    eps: float
    heads: int
    kv_heads: int
    head_dim: int
    max_positions: int
    inv_freq: torch.Tensor  # float32, from the model's rotary module
    attention_scaling: float

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype."""
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.embed.device

    @property
    def vocab_size(self) -> int:
        """Rows of the output projection."""
        return int(self.lm_head.shape[0])

    def rope_table(self, *, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions ``0 .. length-1``, computed as transformers computes them."""
        positions = torch.arange(length, device=self.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.to(device=self.device, dtype=torch.float32)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(self.dtype), sin.to(self.dtype)


def unsupported_reason(model: Any) -> str | None:
    """Why the static engine cannot serve ``model``, or None if it can."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama":
        kind = getattr(config, "model_type", type(model).__name__)
        return f"model type {kind!r} is not llama"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        return "the model has no rotary embedding module"
    rope_type = str(getattr(rotary, "rope_type", "default"))
    if any(kind in rope_type for kind in _GROWING_ROPE):
        return f"rope type {rope_type!r} changes its frequencies with the sequence length"
    return None


def _fuse(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One matrix for several linears; the linears then read slices of it (no second copy)."""
    weight = torch.cat([linear.weight.detach() for linear in linears], dim=0)
    biases = [linear.bias for linear in linears]
    bias = None if biases[0] is None else torch.cat([b.detach() for b in biases], dim=0)
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight.data = weight[start : start + rows]
        if bias is not None:
            linear.bias.data = bias[start : start + rows]
        start += rows
    return weight, bias


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


def extract_weights(model: Any) -> LlamaWeights:
    """Take (and fuse) the weights of a loaded ``LlamaForCausalLM``; raise ``UnsupportedModel``."""
    reason = unsupported_reason(model)
    if reason is not None:
        raise UnsupportedModel(reason)
    config = model.config
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv, qkv_bias = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        gate_up, gate_up_bias = _fuse([mlp.gate_proj, mlp.up_proj])
        layers.append(
            LayerWeights(
                attn_norm=layer.input_layernorm.weight.detach(),
                qkv=qkv,
                qkv_bias=qkv_bias,
                o=attn.o_proj.weight.detach(),
                o_bias=_bias(attn.o_proj),
                mlp_norm=layer.post_attention_layernorm.weight.detach(),
                gate_up=gate_up,
                gate_up_bias=gate_up_bias,
                down=mlp.down_proj.weight.detach(),
                down_bias=_bias(mlp.down_proj),
            )
        )
    rotary = model.model.rotary_emb
    return LlamaWeights(
        layers=tuple(layers),
        embed=model.model.embed_tokens.weight.detach(),
        norm=model.model.norm.weight.detach(),
        lm_head=model.lm_head.weight.detach(),
        eps=float(config.rms_norm_eps),
        heads=heads,
        kv_heads=int(config.num_key_value_heads),
        head_dim=head_dim,
        max_positions=int(getattr(config, "max_position_embeddings", 2048) or 2048),
        inv_freq=rotary.inv_freq.detach().float(),
        attention_scaling=float(rotary.attention_scaling),
    )
