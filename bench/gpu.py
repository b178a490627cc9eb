#!/usr/bin/env python3
# ruff: noqa: E501  (docstring and fixed-width table f-strings read better unwrapped)
"""GPU benchmark for TinyLlama Serve: transformers continuous batching vs padded static-batch `generate`.

Self-contained, needs no network, no tokenizer and no checkpoint: it builds a TinyLlama-shaped Llama
(hidden 2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632, vocab 32000) with random bf16 weights
directly on the GPU and feeds random token ids as prompts.

Reports, per concurrency level (default 1, 8, 32, 128), with fixed-length greedy generation (EOS ignored):
  * continuous batching (CB, the engine under test): `model.init_continuous_batching(...)` with an explicitly
    sized paged cache, streaming results delivered through `register_result_handler` (asyncio) for TTFT;
  * the peer: one padded static batch through `model.generate` (TTFT from a streamer);
  * output tokens/s (end to end, prefill included), steady decode tokens/s, TTFT median/p90, CB/generate ratio;
  * batch-1 decode as a fraction of the memory-bandwidth bound: bound = measured device-to-device copy
    bandwidth (read + write bytes) / weight bytes.

Prints a table; writes JSON to $OUT/gpu.json when OUT is set. A global time guard (default 270 s from process
start) skips the remaining concurrency levels, saying so.

    python3 bench/gpu.py                 # CUDA, TinyLlama shape, bf16
    python3 bench/gpu.py --tiny          # tiny config, float32, CPU allowed: checks the script logic
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import traceback

T_START = time.perf_counter()


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny config, float32, CPU allowed (logic check)"
    )
    p.add_argument("--levels", default="1,8,32,128", help="comma-separated concurrency levels")
    p.add_argument(
        "--prompt-len", type=int, default=None, help="prompt tokens (default 128; 32 with --tiny)"
    )
    p.add_argument(
        "--new-tokens",
        type=int,
        default=None,
        help="generated tokens (default 128; 16 with --tiny)",
    )
    p.add_argument(
        "--budget", type=float, default=270.0, help="global time budget in s, from process start"
    )
    p.add_argument(
        "--round-timeout", type=float, default=90.0, help="max seconds for one timed round"
    )
    p.add_argument(
        "--page-size", type=int, default=None, help="CB page (block) size; default: library default"
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="CB max tokens per step (default 4096; 512 tiny)",
    )
    p.add_argument(
        "--no-graphs", action="store_true", help="skip the extra 'CB + CUDA graphs' section"
    )
    p.add_argument(
        "--cb-poll",
        action="store_true",
        help="collect CB results by polling get_result, not handlers",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


ARGS = parse_args()
# Offline machine: never let transformers/kernels try the hub (flash-attn kernel fallback would
# hang on timeouts).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if ARGS.tiny:
    os.environ.setdefault("OMP_NUM_THREADS", "2")  # must precede `import torch`

import asyncio  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

try:
    from transformers import ContinuousBatchingConfig  # transformers >= 5.x
except Exception:  # pragma: no cover - older versions
    ContinuousBatchingConfig = None

try:
    from transformers.generation.streamers import BaseStreamer
except Exception:  # pragma: no cover
    BaseStreamer = object

transformers.logging.set_verbosity_warning()

NOTES: list[str] = []  # which code paths ran, fallbacks, skips
ERRORS: list[str] = []


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", flush=True)


def note(msg: str) -> None:
    NOTES.append(msg)
    log(msg)


def elapsed() -> float:
    return time.perf_counter() - T_START


def remaining() -> float:
    return ARGS.budget - elapsed()


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation (q in [0, 100])."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -----------------------------------------------------------------------------------------------
# setup
def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if not ARGS.tiny:
        print("ERROR: no CUDA device; run with --tiny to check the logic on CPU.", file=sys.stderr)
        sys.exit(2)
    return torch.device("cpu")


def make_config() -> LlamaConfig:
    common = dict(
        eos_token_id=None,  # fixed-length generation: no EOS anywhere
        bos_token_id=1,
        pad_token_id=0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    if ARGS.tiny:
        return LlamaConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=1000,
            max_position_embeddings=512,
            **common,
        )
    return LlamaConfig(
        hidden_size=2048,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        intermediate_size=5632,
        vocab_size=32000,
        max_position_embeddings=2048,
        **common,
    )


def build_model(config: LlamaConfig, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    """Random init directly on the target device and dtype (no slow CPU init, no checkpoint)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def measure_copy_bandwidth(device: torch.device) -> dict:
    """Device-to-device copy bandwidth, counting read + write bytes."""
    nbytes = (1 << 30) if device.type == "cuda" else (64 << 20)
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    src.uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    iters = 20 if device.type == "cuda" else 5
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dst.copy_(src)
        end.record()
        end.synchronize()
        secs = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            dst.copy_(src)
        secs = time.perf_counter() - t0
    bw = 2 * nbytes * iters / secs
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"tensor_bytes": nbytes, "iters": iters, "bytes_per_s": bw}


def random_prompts(n: int, length: int, vocab: int, gen: torch.Generator) -> list[list[int]]:
    # Avoid the special ids 0..2; each call gives fresh prompts (no accidental prefix-cache hits).
    return torch.randint(3, vocab, (n, length), generator=gen).tolist()


# -----------------------------------------------------------------------------------------------
# peer: generate
class TimingStreamer(BaseStreamer):
    """Records the time of each `put` after the prompt: the first one is the first generated token."""

    def __init__(self):
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value):
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def make_gen_config(max_new: int) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=max_new,
        min_new_tokens=max_new,
        do_sample=False,
        num_beams=1,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=1,
    )


@torch.inference_mode()
def run_generate(model, prompts: list[list[int]], max_new: int, device: torch.device) -> dict:
    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    streamer = TimingStreamer()
    sync(device)
    t0 = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=make_gen_config(max_new),
        streamer=streamer,
    )
    sync(device)
    t1 = time.perf_counter()
    n = len(prompts)
    new_tokens = out.shape[1] - ids.shape[1]
    first = streamer.times[0] if streamer.times else None
    ttft = (first - t0) if first is not None else None
    decode_span = (t1 - first) if first is not None else None
    return {
        "wall_s": t1 - t0,
        "new_tokens_per_seq": int(new_tokens),
        "output_tok_s": n * new_tokens / (t1 - t0),
        "decode_tok_s": (n * (new_tokens - 1) / decode_span)
        if decode_span and new_tokens > 1
        else None,
        "ttft_ms_median": ttft * 1e3
        if ttft is not None
        else None,  # one batch: every request shares it
        "ttft_ms_p90": ttft * 1e3 if ttft is not None else None,
        "first_seq": out[0, ids.shape[1] :].tolist(),
    }


# -----------------------------------------------------------------------------------------------
# engine: CB
def filter_fields(cls, kwargs: dict) -> dict:
    """Keep only the kwargs the installed ContinuousBatchingConfig knows (page_size was block_size before 5.17)."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
    else:
        names = set(inspect.signature(cls).parameters)
    out = {}
    for k, v in kwargs.items():
        if k in names:
            out[k] = v
        elif k == "page_size" and "block_size" in names:
            out["block_size"] = v
        else:
            note(f"ContinuousBatchingConfig has no field {k!r}: not set")
    return out


def cb_sizing(conc: int, prompt_len: int, max_new: int) -> dict:
    """Explicit cache sizing: enough blocks for `conc` full requests, plus slack for the scheduler safety margin."""
    page = ARGS.page_size or 256
    blocks_per_req = math.ceil((prompt_len + max_new + 1) / page)
    num_blocks = math.ceil(conc * blocks_per_req / 0.7) + 2
    mbt = ARGS.max_batch_tokens or (512 if ARGS.tiny else 4096)
    mbt = max(mbt, conc)  # a full decode step must fit
    kw = {"num_blocks": num_blocks, "max_batch_tokens": mbt, "max_requests_per_batch": max(conc, 1)}
    if ARGS.page_size:
        kw["page_size"] = ARGS.page_size
    return kw


def init_manager(model, conc: int, prompt_len: int, max_new: int, extra_cb: dict | None = None):
    """Create (not start) a CB manager. Tries the default attention first (the manager switches it to its paged
    variant: 'paged|sdpa' on 5.17, 'sdpa' on 5.24), then explicit 'paged|sdpa', then 'paged|eager'."""
    gen_cfg = make_gen_config(max_new)
    gen_cfg.eos_token_id = -1  # CB: -1 disables EOS (None is turned into -1 with a warning)
    gen_cfg.min_new_tokens = None
    kw = cb_sizing(conc, prompt_len, max_new)
    kw.update(extra_cb or {})
    original_attn = model.config._attn_implementation
    attempts = [None, "paged|sdpa", "paged|eager"]
    last_err = None
    for attn in attempts:
        try:
            if attn is not None:
                model.set_attn_implementation(attn)
            if ContinuousBatchingConfig is not None:
                cb_cfg = ContinuousBatchingConfig(**filter_fields(ContinuousBatchingConfig, kw))
                try:
                    mgr = model.init_continuous_batching(
                        generation_config=gen_cfg, continuous_batching_config=cb_cfg
                    )
                    path = "init_continuous_batching(continuous_batching_config=...)"
                except TypeError:
                    gen_cfg.continuous_batching_config = cb_cfg
                    mgr = model.init_continuous_batching(generation_config=gen_cfg)
                    path = "init_continuous_batching(generation_config.continuous_batching_config)"
            else:  # very old API: sizing lived on the GenerationConfig
                for k, v in kw.items():
                    setattr(gen_cfg, k, v)
                mgr = model.init_continuous_batching(generation_config=gen_cfg)
                path = "init_continuous_batching(generation_config with sizing)"
            resolved = getattr(mgr, "continuous_batching_config", None)
            return mgr, {
                "requested_attn": attn or f"default ({original_attn})",
                "attn_in_use": model.config._attn_implementation,
                "api_path": path,
                "sizing": kw,
                "use_cuda_graph": str(getattr(resolved, "use_cuda_graph", None)),
                "use_async_batching": str(getattr(resolved, "use_async_batching", None)),
            }
        except Exception as e:  # try the next attention implementation
            last_err = e
            note(
                f"init_continuous_batching with attn={attn or 'default'} failed: {type(e).__name__}: {e}"
            )
            try:
                model.set_attn_implementation(original_attn)
            except Exception as e2:
                note(f"could not restore attn {original_attn}: {e2}")
    raise RuntimeError(f"no CB path worked: {last_err}")


class CBRound:
    """Collects streaming outputs for one burst of requests; thread-safe enough for both delivery modes."""

    def __init__(self, n: int):
        self.n = n
        self.submit = [0.0] * n
        self.first = [None] * n
        self.done = [None] * n
        self.ntok = [0] * n
        self.tokens = [None] * n
        self.errors: list[str] = []
        self.finished = 0
        self.lock = threading.Lock()

    def on_output(self, i: int, out) -> None:
        now = time.perf_counter()
        with self.lock:
            if self.first[i] is None and len(out.generated_tokens) > 0:
                self.first[i] = now
            if out.is_finished() and self.done[i] is None:
                self.done[i] = now
                self.ntok[i] = len(out.generated_tokens)
                self.tokens[i] = list(out.generated_tokens)
                if getattr(out, "error", None):
                    self.errors.append(f"{out.request_id}: {out.error}")
                self.finished += 1


def _add_request(mgr, prompt, rid, max_new):
    try:
        return mgr.add_request(prompt, request_id=rid, max_new_tokens=max_new, streaming=True)
    except TypeError:  # older signature
        return mgr.add_request(prompt, request_id=rid, max_new_tokens=max_new)


async def _cb_round_handlers(mgr, prompts, max_new, tag, limit_s) -> CBRound:
    r = CBRound(len(prompts))
    all_done = asyncio.Event()

    def make_cb(i):
        def cb(out):
            r.on_output(i, out)
            if r.finished >= r.n:
                all_done.set()

        return cb

    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        rid = f"{tag}_{i}"
        mgr.register_result_handler(rid, make_cb(i))  # before add_request
        r.submit[i] = time.perf_counter()
        _add_request(mgr, p, rid, max_new)
    while not all_done.is_set():
        try:
            await asyncio.wait_for(all_done.wait(), timeout=1.0)
        except TimeoutError:
            if not mgr.is_running():
                raise RuntimeError("CB generation thread died") from None
            if time.perf_counter() - t0 > limit_s:
                raise TimeoutError(
                    f"CB round {tag} exceeded {limit_s:.0f}s ({r.finished}/{r.n} done)"
                ) from None
    return r


def _cb_round_poll(mgr, prompts, max_new, tag, limit_s) -> CBRound:
    r = CBRound(len(prompts))
    index = {}
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        rid = f"{tag}_{i}"
        index[rid] = i
        r.submit[i] = time.perf_counter()
        _add_request(mgr, p, rid, max_new)
    while r.finished < r.n:
        out = mgr.get_result(timeout=0.5)
        if out is None:
            if not mgr.is_running():
                raise RuntimeError("CB generation thread died") from None
            if time.perf_counter() - t0 > limit_s:
                raise TimeoutError(
                    f"CB round {tag} exceeded {limit_s:.0f}s ({r.finished}/{r.n} done)"
                )
            continue
        if out.request_id in index:
            r.on_output(index[out.request_id], out)
    return r


def cb_round(mgr, prompts, max_new, tag, timeout, use_handlers) -> CBRound:
    if use_handlers:
        return asyncio.run(_cb_round_handlers(mgr, prompts, max_new, tag, timeout))
    return _cb_round_poll(mgr, prompts, max_new, tag, timeout)


def summarize_cb(r: CBRound, expected_new: int) -> dict:
    n = r.n
    t0 = min(r.submit)
    t_end = max(d for d in r.done if d is not None)
    ttfts = [f - s for f, s in zip(r.first, r.submit, strict=True) if f is not None]
    total = sum(r.ntok)
    last_first = max(f for f in r.first if f is not None)
    steady_tokens = sum(max(k - 1, 0) for k in r.ntok)
    # steady decode: tokens after each request's first, over the time after the median
    # request's first token
    first_med = pct([f for f in r.first if f is not None], 50)
    span = t_end - first_med if first_med is not None else None
    return {
        "wall_s": t_end - t0,
        "new_tokens_per_seq_min": min(r.ntok),
        "new_tokens_per_seq_max": max(r.ntok),
        "fixed_length_ok": all(k == expected_new for k in r.ntok),
        "output_tok_s": total / (t_end - t0),
        "decode_tok_s": (steady_tokens / span) if span and span > 0 else None,
        "ttft_ms_median": pct(ttfts, 50) * 1e3 if ttfts else None,
        "ttft_ms_p90": pct(ttfts, 90) * 1e3 if ttfts else None,
        "last_first_token_s": last_first - t0,
        "errors": r.errors[:5],
        "first_seq": r.tokens[0],
        "n": n,
    }


# NOT inference_mode: on 5.17 the generation thread does not inherit it, and cache tensors created
# here under
# inference_mode (manager.warmup builds the cache) then fail in-place updates in that thread.
@torch.no_grad()
def bench_cb_level(
    model, conc, prompt_len, max_new, gen, vocab, extra_cb=None, label="cb", prompts=None
) -> dict:
    t_setup = time.perf_counter()
    mgr, info = init_manager(model, conc, prompt_len, max_new, extra_cb)
    use_handlers = hasattr(mgr, "register_result_handler") and not ARGS.cb_poll
    info["delivery"] = "register_result_handler (asyncio)" if use_handlers else "get_result polling"
    try:
        if hasattr(mgr, "warmup"):
            try:
                mgr.warmup()
                info["manager_warmup"] = "ok"
            except Exception as e:
                info["manager_warmup"] = f"failed: {type(e).__name__}: {e}"
                note(f"[{label} c={conc}] manager.warmup failed: {e}")
        mgr.start()
        info["setup_s"] = time.perf_counter() - t_setup
        # warm-up round: same concurrency, a few tokens, fresh prompts
        t_w = time.perf_counter()
        w = cb_round(
            mgr,
            random_prompts(conc, prompt_len, vocab, gen),
            min(4, max_new),
            f"{label}w{conc}",
            ARGS.round_timeout,
            use_handlers,
        )
        if w.errors:
            raise RuntimeError(f"warm-up errors: {w.errors[:3]}")
        info["warmup_round_s"] = time.perf_counter() - t_w
        timeout = max(5.0, min(ARGS.round_timeout, remaining()))
        if prompts is None:
            prompts = random_prompts(conc, prompt_len, vocab, gen)
        r = cb_round(mgr, prompts, max_new, f"{label}t{conc}", timeout, use_handlers)
        res = summarize_cb(r, max_new)
        res.update(info)
        return res
    finally:
        try:
            mgr.stop(block=True, timeout=30)
        except Exception as e:
            note(f"[{label} c={conc}] stop failed: {e}")
        if mgr.is_running():
            note(f"[{label} c={conc}] generation thread still alive after stop; hard-stopping")
            try:
                mgr.stop(block=True, timeout=10, hard_stop=True)
            except Exception as e:
                note(f"[{label} c={conc}] hard stop failed: {e}")
        if hasattr(mgr, "destroy"):
            try:
                mgr.destroy()
            except Exception as e:
                note(f"[{label} c={conc}] destroy failed: {e}")
        if getattr(model, "_cached_continuous_batching_manager", None) is not None:
            try:
                model.destroy_cached_continuous_batching_manager()
            except Exception as e:
                note(f"[{label} c={conc}] destroy cached manager failed: {e}")


# -----------------------------------------------------------------------------------------------
# main
def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main() -> int:
    torch.manual_seed(ARGS.seed)
    device = pick_device()
    dtype = torch.float32 if ARGS.tiny else torch.bfloat16
    prompt_len = ARGS.prompt_len or (32 if ARGS.tiny else 128)
    max_new = ARGS.new_tokens or (16 if ARGS.tiny else 128)
    levels = [int(x) for x in ARGS.levels.split(",") if x.strip()]
    gen = torch.Generator().manual_seed(ARGS.seed)

    meta = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "tiny": ARGS.tiny,
        "prompt_len": prompt_len,
        "new_tokens": max_new,
        "levels": levels,
        "budget_s": ARGS.budget,
    }
    try:
        import flash_attn

        meta["flash_attn"] = getattr(flash_attn, "__version__", "present")
    except Exception:
        meta["flash_attn"] = None
    log(
        f"python {meta['python']} torch {meta['torch']} transformers {meta['transformers']} cuda {meta['cuda']} "
        f"device {meta['device']} flash_attn {meta['flash_attn']}"
    )

    # 1) bandwidth
    bw = measure_copy_bandwidth(device)
    log(f"d2d copy bandwidth (read+write): {bw['bytes_per_s'] / 1e9:.1f} GB/s")

    # 2) model
    t = time.perf_counter()
    config = make_config()
    model = build_model(config, device, dtype)
    sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    emb_bytes = (
        model.model.embed_tokens.weight.numel() * model.model.embed_tokens.weight.element_size()
    )
    bound = bw["bytes_per_s"] / weight_bytes
    log(
        f"model built in {time.perf_counter() - t:.1f}s: {n_params / 1e6:.1f}M params, {weight_bytes / 1e9:.3f} GB "
        f"({meta['dtype']}), attn={model.config._attn_implementation}; batch-1 bound {bound:.0f} tok/s"
    )
    meta["attn_default"] = model.config._attn_implementation

    # 3) per level: CB then padded generate
    results = []
    skipped = []
    per_level_cost = None  # seconds the last level took, used by the time guard
    for li, conc in enumerate(levels):
        # guard: assume cost grows ~1.5x per level (ratio 4x in concurrency; mostly overhead-bound)
        est = (2.0 if ARGS.tiny else 20.0) if per_level_cost is None else per_level_cost * 1.5
        if remaining() < est:
            skipped = levels[li:]
            note(
                f"TIME GUARD: {remaining():.0f}s left < ~{est:.0f}s estimated: skipping concurrency {skipped}"
            )
            break
        t_level = time.perf_counter()
        guard_hit = False
        row = {"concurrency": conc}
        # the same timed prompts for both (generate keeps no cache between calls, so no
        # reuse advantage)
        timed_prompts = random_prompts(conc, prompt_len, config.vocab_size, gen)
        # engine under test
        try:
            row["cb"] = bench_cb_level(
                model, conc, prompt_len, max_new, gen, config.vocab_size, prompts=timed_prompts
            )
            c = row["cb"]
            log(
                f"c={conc:<4} CB : {c['output_tok_s']:8.1f} out tok/s, decode {fmt(c['decode_tok_s'])} tok/s, "
                f"TTFT med {fmt(c['ttft_ms_median'])} ms p90 {fmt(c['ttft_ms_p90'])} ms "
                f"[{c['attn_in_use']}, graphs {c['use_cuda_graph']}, setup {c['setup_s']:.1f}s]"
            )
        except Exception as e:
            row["cb"] = {"error": f"{type(e).__name__}: {e}"}
            ERRORS.append(f"CB c={conc}: {type(e).__name__}: {e}")
            log(f"c={conc} CB FAILED: {e}")
            traceback.print_exc()
        # peer
        try:
            need = max(1.0 if ARGS.tiny else 5.0, 1.2 * row.get("cb", {}).get("wall_s", 0.0))
            if remaining() < need:
                guard_hit = True
                raise TimeoutError(
                    f"time guard: {remaining():.0f}s left, not enough for the generate peer"
                )
            run_generate(
                model,
                random_prompts(conc, prompt_len, config.vocab_size, gen),
                min(4, max_new),
                device,
            )
            row["generate"] = run_generate(model, timed_prompts, max_new, device)
            g = row["generate"]
            log(
                f"c={conc:<4} GEN: {g['output_tok_s']:8.1f} out tok/s, decode {fmt(g['decode_tok_s'])} tok/s, "
                f"TTFT {fmt(g['ttft_ms_median'])} ms"
            )
        except Exception as e:
            row["generate"] = {"error": f"{type(e).__name__}: {e}"}
            ERRORS.append(f"generate c={conc}: {type(e).__name__}: {e}")
            log(f"c={conc} generate FAILED: {e}")
            traceback.print_exc()
        c, g = row.get("cb", {}), row.get("generate", {})
        if "output_tok_s" in c and "output_tok_s" in g:
            row["ratio_output_cb_over_gen"] = c["output_tok_s"] / g["output_tok_s"]
            if c.get("decode_tok_s") and g.get("decode_tok_s"):
                row["ratio_decode_cb_over_gen"] = c["decode_tok_s"] / g["decode_tok_s"]
            if c.get("ttft_ms_median") and g.get("ttft_ms_median"):
                row["ratio_ttft_cb_over_gen"] = c["ttft_ms_median"] / g["ttft_ms_median"]
            n = min(len(c["first_seq"] or []), len(g["first_seq"]))
            k = next((i for i in range(n) if c["first_seq"][i] != g["first_seq"][i]), n)
            row["greedy_common_prefix_req0"] = (
                k  # informational: bf16 kernels differ, random weights tie easily
            )
        for d in (c, g):
            d.pop("first_seq", None)
        per_level_cost = time.perf_counter() - t_level
        row["level_s"] = per_level_cost
        results.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if guard_hit:
            skipped = levels[li + 1 :]
            if skipped:
                note(f"TIME GUARD: skipping concurrency {skipped}")
            break

    # 4) report now (table + JSON), so a later hang or kill cannot lose the main numbers
    graphs = []

    def emit(stage: str) -> None:
        b1 = next((r for r in results if r["concurrency"] == 1), None)
        frac = {}
        if b1:
            for k in ("cb", "generate"):
                d = b1.get(k, {}).get("decode_tok_s")
                frac[k] = d / bound if d else None
        g1 = next((r for r in graphs if r.get("concurrency") == 1 and "decode_tok_s" in r), None)
        if g1 and g1.get("decode_tok_s"):
            frac["cb_cuda_graphs"] = g1["decode_tok_s"] / bound

        print()
        print(f"=== report: {stage} ===")
        print(
            f"TinyLlama Serve GPU bench | {meta['device']} | torch {meta['torch']} | transformers "
            f"{meta['transformers']} | {meta['dtype']} | prompt {prompt_len} + {max_new} new tokens, greedy, EOS off"
        )
        print(
            f"weights {weight_bytes / 1e9:.3f} GB | d2d copy {bw['bytes_per_s'] / 1e9:.0f} GB/s (read+write) | "
            f"batch-1 bound {bound:.0f} tok/s"
        )
        hdr = (
            f"{'conc':>5} | {'CB out tok/s':>12} {'CB dec tok/s':>12} {'CB TTFT med/p90 ms':>19} | "
            f"{'gen out tok/s':>13} {'gen dec tok/s':>13} {'gen TTFT ms':>11} | {'out x':>6} {'dec x':>6}"
        )
        print(hdr)
        print("-" * len(hdr))
        for r in results:
            c, g = r.get("cb", {}), r.get("generate", {})
            ttft_c = (
                f"{fmt(c.get('ttft_ms_median'))}/{fmt(c.get('ttft_ms_p90'))}"
                if "ttft_ms_median" in c
                else "ERR"
            )
            print(
                f"{r['concurrency']:>5} | {fmt(c.get('output_tok_s')):>12} {fmt(c.get('decode_tok_s')):>12} "
                f"{ttft_c:>19} | {fmt(g.get('output_tok_s')):>13} {fmt(g.get('decode_tok_s')):>13} "
                f"{fmt(g.get('ttft_ms_median')):>11} | {fmt(r.get('ratio_output_cb_over_gen'), '.2f'):>6} "
                f"{fmt(r.get('ratio_decode_cb_over_gen'), '.2f'):>6}"
            )
        for s in skipped:
            print(f"{s:>5} | SKIPPED (time guard)")
        for r in graphs:
            if "error" in r:
                print(f"CB + CUDA graphs c={r['concurrency']}: FAILED {r['error']}")
            else:
                print(
                    f"CB + CUDA graphs c={r['concurrency']}: out {fmt(r['output_tok_s'])} tok/s, decode "
                    f"{fmt(r['decode_tok_s'])} tok/s, TTFT med/p90 {fmt(r['ttft_ms_median'])}/{fmt(r['ttft_ms_p90'])} "
                    f"ms (use_cuda_graph={r['use_cuda_graph']})"
                )
        print(
            "batch-1 decode / bandwidth bound: "
            + ", ".join(f"{k} {fmt(v * 100 if v else None, '.2f')}%" for k, v in frac.items())
        )
        if results and "cb" in results[0] and "attn_in_use" in results[0]["cb"]:
            c0 = results[0]["cb"]
            print(
                f"CB path: {c0['api_path']}; attn {c0['attn_in_use']}; delivery {c0['delivery']}; "
                f"cuda graphs {c0['use_cuda_graph']}; async batching {c0['use_async_batching']}"
            )
        print(
            "out = generated tokens / wall time from submission to last token (prefill included); dec = steady "
            "decode (tokens after the first / time after the median first token); x = CB / generate"
        )
        if NOTES:
            print("notes: " + " | ".join(NOTES))
        if ERRORS:
            print("ERRORS: " + " | ".join(ERRORS))
        print(f"total {elapsed():.1f}s")

        report = {
            "meta": meta,
            "bandwidth": bw,
            "weights": {"params": n_params, "bytes": weight_bytes, "embedding_bytes": emb_bytes},
            "batch1_bound_tok_s": bound,
            "batch1_fraction_of_bound": frac,
            "levels": results,
            "skipped_levels": skipped,
            "cb_cuda_graphs": graphs,
            "notes": NOTES,
            "errors": ERRORS,
            "total_s": elapsed(),
        }
        out_dir = os.environ.get("OUT")
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, "gpu.json")
            with open(path, "w") as f:
                json.dump(report, f, indent=2, default=str)
            print(f"wrote {path}")

    emit("main")

    # 5) optional: CB with CUDA graphs forced on (attention needs a mask with sdpa, so the
    # library leaves them off)
    # (GPU_BENCH_FORCE_GRAPHS=1 runs the section off-GPU too, only to exercise the code path;
    # the library then
    # turns graphs off itself)
    if (
        device.type == "cuda" or os.environ.get("GPU_BENCH_FORCE_GRAPHS") == "1"
    ) and not ARGS.no_graphs:
        for conc in [lv for lv in (1, 32) if lv in levels]:
            if remaining() < 45:
                note(
                    f"TIME GUARD: skipping 'CB + CUDA graphs' at c={conc} ({remaining():.0f}s left)"
                )
                continue
            try:
                r = bench_cb_level(
                    model,
                    conc,
                    prompt_len,
                    max_new,
                    gen,
                    config.vocab_size,
                    extra_cb={"use_cuda_graph": True},
                    label="cbg",
                )
                r.pop("first_seq", None)
                r["concurrency"] = conc
                graphs.append(r)
                log(
                    f"c={conc:<4} CB+graphs: {r['output_tok_s']:8.1f} out tok/s, decode {fmt(r['decode_tok_s'])} "
                    f"tok/s, TTFT med {fmt(r['ttft_ms_median'])} ms [graphs {r['use_cuda_graph']}]"
                )
            except Exception as e:
                graphs.append({"concurrency": conc, "error": f"{type(e).__name__}: {e}"})
                ERRORS.append(f"CB+graphs c={conc}: {type(e).__name__}: {e}")
                log(f"c={conc} CB+graphs FAILED: {e}")

        emit("final (with CB + CUDA graphs section)")
    return 1 if ERRORS and not results else 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # A CB generation thread is not a daemon: never let a stuck one keep the process alive.
        os._exit(rc)
