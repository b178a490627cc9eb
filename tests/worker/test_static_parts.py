"""The static engine's parts: buckets, slots, scheduling, sampling, weights and RoPE."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from services.worker.backends import choose_backend
from services.worker.static.cache import KVCache, SlotPool
from services.worker.static.graphs import Decoder
from services.worker.static.sampling import RowParams, sample, uniforms
from services.worker.static.scheduler import Scheduler, Sequence
from services.worker.static.step import Step, batch_buckets, bucket_for, kv_buckets
from services.worker.static.weights import UnsupportedModel, extract_weights


def _llama(**overrides) -> LlamaForCausalLM:
    config = {
        "vocab_size": 96,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        **overrides,
    }
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


def _step(model, *, slots: int = 2, slot_len: int = 128) -> Step:
    weights = extract_weights(model)
    cache = KVCache(
        layers=len(weights.layers),
        slots=slots,
        kv_heads=weights.kv_heads,
        slot_len=slot_len,
        head_dim=weights.head_dim,
        dtype=weights.dtype,
        device="cpu",
    )
    return Step(weights=weights, cache=cache)


@pytest.mark.parametrize(
    ("slots", "expected"),
    [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]), (33, [1, 2, 4, 8, 16, 32, 33])],
)
def test_batch_buckets_double_up_to_the_slot_count(slots, expected):
    """Decode graphs are captured for 1, 2, 4, ... rows and for all the slots."""
    assert batch_buckets(slots) == expected


def test_kv_buckets_and_bucket_choice():
    """Attended lengths double from 64 up to the slot length; a need takes the smallest fit."""
    assert kv_buckets(512) == [64, 128, 256, 512]
    assert kv_buckets(300) == [64, 128, 256, 300]
    assert kv_buckets(32) == [32]
    assert bucket_for(65, kv_buckets(512)) == 128
    assert bucket_for(3, batch_buckets(8)) == 4
    with pytest.raises(ValueError, match="exceeds"):
        bucket_for(9, batch_buckets(8))


def test_slots_are_handed_out_lowest_first_and_reused():
    """A freed slot is the next one given out, so busy slots stay packed at the bottom."""
    pool = SlotPool(3)
    assert [pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()] == [0, 1, 2, None]
    pool.release(1)
    pool.release(1)
    assert pool.free == 1
    assert pool.highest_busy == 2
    assert pool.acquire() == 1


def test_prefill_chunks_share_the_token_budget():
    """Prompts prefill in chunks of at most max_batch_tokens, rows padded to the widest."""
    scheduler = Scheduler(slots=4, max_batch_tokens=8)
    for name, length in [("a", 20), ("b", 3), ("c", 3)]:
        scheduler.add(Sequence(request_id=name, prompt=[1] * length, max_new_tokens=4))
    assert [s.slot for s in scheduler.admit()] == [0, 1, 2]
    first = scheduler.prefill_chunks()
    assert [(c.sequence.request_id, c.start, c.count) for c in first] == [("a", 0, 8)]
    first[0].sequence.prefilled = 16
    second = scheduler.prefill_chunks()
    assert [(c.sequence.request_id, c.count, c.completes) for c in second] == [
        ("a", 4, True),
        ("b", 3, True),
    ]
    assert scheduler.decoding() == []


def test_cancel_frees_the_slot_of_a_running_request_and_drops_a_waiting_one():
    """Cancelled requests leave the scheduler whether or not they had a slot."""
    scheduler = Scheduler(slots=1, max_batch_tokens=8)
    scheduler.add(Sequence(request_id="run", prompt=[1], max_new_tokens=4))
    scheduler.add(Sequence(request_id="wait", prompt=[1], max_new_tokens=4))
    scheduler.admit()
    scheduler.cancel("wait")
    scheduler.cancel("run")
    assert scheduler.idle
    assert scheduler.pool.free == 1


def _params(rows: int, *, seed: int, step: int = 0, **kw) -> RowParams:
    values = {"temperature": 1.0, "top_k": 10_000, "top_p": 2.0, **kw}
    return RowParams(
        greedy=torch.zeros(rows, dtype=torch.bool),
        temperature=torch.full((rows,), float(values["temperature"])),
        top_k=torch.full((rows,), int(values["top_k"])),
        top_p=torch.full((rows,), float(values["top_p"])),
        seeds=torch.full((rows,), seed),
        steps=torch.full((rows,), step),
        all_greedy=False,
    )


def test_noise_depends_only_on_seed_and_step():
    """The same (seed, step) gives the same uniforms in any row of any batch; others differ."""
    one = uniforms(torch.tensor([7]), torch.tensor([3]), vocab=50)
    batch = uniforms(torch.tensor([1, 7, 2**62 + 5]), torch.tensor([3, 3, 3]), vocab=50)
    assert torch.equal(one[0], batch[1])
    assert not torch.equal(batch[0], batch[1])
    assert not torch.equal(one, uniforms(torch.tensor([7]), torch.tensor([4]), vocab=50))
    many = uniforms(torch.arange(200), torch.zeros(200, dtype=torch.long), vocab=500)
    assert 0.0 < many.min()
    assert many.max() < 1.0
    assert abs(many.mean().item() - 0.5) < 0.01


def test_sampling_follows_the_softmax():
    """Over many seeds, tokens come out about as often as softmax(logits / T) says."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    params = _params(4000, seed=0, temperature=0.5)
    params = RowParams(**{**params.__dict__, "seeds": torch.arange(4000)})
    counts = torch.bincount(sample(logits, params), minlength=4).float() / 4000
    expected = (logits[0] / 0.5).softmax(-1)
    assert torch.allclose(counts, expected, atol=0.03)


def test_top_k_top_p_and_greedy_rows():
    """top-k 1 and a tiny top-p leave only the best token; greedy rows take the argmax."""
    logits = torch.tensor([[0.1, 3.0, 2.9, 0.0]] * 3)
    assert sample(logits, _params(3, seed=5, top_k=1)).tolist() == [1, 1, 1]
    assert sample(logits, _params(3, seed=5, top_p=0.01)).tolist() == [1, 1, 1]
    greedy = _params(3, seed=5, temperature=50.0)
    greedy = RowParams(**{**greedy.__dict__, "greedy": torch.tensor([True, True, True])})
    assert sample(logits, greedy).tolist() == [1, 1, 1]


@pytest.mark.parametrize("temperature", [1e-5, 1e-39, 1e-46])
def test_a_temperature_near_zero_samples_the_top_token(temperature):
    """A T so small that logits / T overflow float32 still samples the argmax, not token 0."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [-3.0, -1.0, -2.0, -5.0], [40.0, 80.0, 79.0, 0.0]])
    for top_p in (2.0, 0.5):
        picked = sample(logits, _params(3, seed=5, temperature=temperature, top_p=top_p))
        assert picked.tolist() == [1, 1, 1]


def test_fused_weights_leave_generate_unchanged():
    """After fusing QKV and gate/up, the model's own generate gives the same tokens."""
    model = _llama()
    ids = torch.tensor([[5, 9, 17, 3]])
    before = model.generate(ids, max_new_tokens=8, do_sample=False)
    weights = extract_weights(model)
    assert weights.layers[0].qkv.shape == (64 + 2 * 16, 64)
    assert model.model.layers[0].self_attn.q_proj.weight.data_ptr() == (
        weights.layers[0].qkv.data_ptr()
    )
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False), before)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
    ids=["default", "llama3", "yarn"],
)
def test_prefill_logits_match_the_model_for_each_rope_type(rope):
    """Our forward equals transformers' Llama for default, Llama-3 and YaRN RoPE (tied head)."""
    model = _llama(rope_parameters=rope, tie_word_embeddings=True)
    ids = torch.randint(0, 96, (1, 100), generator=torch.Generator().manual_seed(1))
    expected = model(ids).logits[0]
    step = _step(model)
    got = step.prefill(
        ids,
        torch.arange(100)[None],
        slots=torch.tensor([1]),
        last=torch.tensor([99]),
        kv_len=128,
    )
    assert torch.allclose(got[0], expected[-1], atol=1e-5)
    # One decode step on slot 1 continues from the cache the prefill wrote.
    nxt = int(got[0].argmax())
    full = model(torch.cat([ids, torch.tensor([[nxt]])], dim=1)).logits[0, -1]
    decoded = step.decode(torch.tensor([0, nxt]), torch.tensor([128, 100]), kv_len=128)
    assert torch.allclose(decoded[1], full, atol=1e-5)


def test_models_the_static_engine_cannot_serve():
    """Growing RoPE or another architecture: auto picks transformers, static is an error."""
    dynamic = _llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0})
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    for model in (dynamic, gpt2):
        assert choose_backend(model=model, setting="auto") == "transformers"
        with pytest.raises(UnsupportedModel, match="cannot serve"):
            choose_backend(model=model, setting="static")
    assert choose_backend(model=_llama(), setting="auto") == "static"
    assert choose_backend(model=_llama(), setting="transformers") == "transformers"


def test_decoder_runs_eagerly_without_cuda():
    """On a CPU, graphs asked for are not captured: the same step runs eagerly."""
    step = _step(_llama(), slots=4)
    decoder = Decoder(step, use_graphs=True)
    decoder.capture()
    assert decoder.graphs == {}
    assert not decoder.use_graphs  # weights on the CPU
    assert decoder.buckets(rows=3, longest=70) == (4, 128)
    logits = decoder.decode([1, 2, 3, 4], [0, 0, 0, 128], kv_len=64)
    assert logits.shape == (4, 96)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_decode_equals_eager_decode():
    """On a GPU, every captured bucket replays to the logits the eager step computes."""
    model = _llama().to("cuda")
    weights = extract_weights(model)
    cache = KVCache(
        layers=len(weights.layers),
        slots=4,
        kv_heads=weights.kv_heads,
        slot_len=128,
        head_dim=weights.head_dim,
        dtype=weights.dtype,
        device="cuda",
    )
    decoder = Decoder(Step(weights=weights, cache=cache), use_graphs=True)
    decoder.capture()
    assert set(decoder.graphs) == {(b, k) for b in (1, 2, 4) for k in (64, 128)}
    tokens, positions = [3, 5, 7, 9], [0, 1, 2, 128]
    graphed = decoder.decode(tokens, positions, kv_len=64).clone()
    eager = decoder.step.decode(
        torch.tensor(tokens, device="cuda"), torch.tensor(positions, device="cuda"), kv_len=64
    )
    assert torch.allclose(graphed, eager, atol=1e-4)
