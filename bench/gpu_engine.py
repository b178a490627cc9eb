#!/usr/bin/env python3
"""The worker's engines (``TINYLLAMA_ENGINE=static`` and ``transformers``) on a CUDA machine.

A TinyLlama-shaped model (hidden 2048, 22 layers, 32/4 heads, vocab 32000) with random
bf16 weights, no network: output tokens/s and time to first token (p50) at concurrency
1, 32 and 128 through the engines' ``stream``, greedy, fixed length, each engine with
CUDA graphs on (and, with ``--graphs-off``, off too), same run, same device. Batch-1
decode is also given as a fraction of the bandwidth bound (device copy bandwidth /
weight bytes per step). ``--tiny`` checks the script on a CPU (eager, float32).

    python3 bench/gpu_engine.py                          # CUDA, both engines
    python3 bench/gpu_engine.py --engines static         # ours only
    python3 bench/gpu_engine.py --tiny                   # logic check on CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
T0 = time.perf_counter()


def _model(tiny: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        config = LlamaConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=172,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
        )
        return LlamaForCausalLM(config).eval(), "cpu", "float32"
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    return model, "cuda", "bfloat16"


async def _round(engine, *, n: int, prompt_len: int, new: int, seed: int) -> dict:
    import random

    from services.worker.engine import Sampling

    rng = random.Random(seed)
    prompts = [[rng.randrange(10, 1000) for _ in range(prompt_len)] for _ in range(n)]
    ttft: list[float] = []
    counts: list[int] = []
    started = time.perf_counter()

    async def one(i: int) -> None:
        got = 0
        t0 = time.perf_counter()
        async for ids in engine.stream(
            f"r{seed}-{i}", prompts[i], max_new_tokens=new, sampling=Sampling()
        ):
            if got == 0:
                ttft.append(time.perf_counter() - t0)
            got += len(ids)
        counts.append(got)

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    return {
        "concurrency": n,
        "tokens": sum(counts),
        "wall_s": round(wall, 3),
        "tok_s": round(sum(counts) / wall, 1),
        "ttft_ms_median": round(statistics.median(ttft) * 1000, 1),
        "min_tokens": min(counts),
    }


def _copy_bandwidth() -> float:
    """Device-to-device copy bytes per second (read + write), the decode roofline's input."""
    import torch

    src = torch.empty(1 << 29, dtype=torch.bfloat16, device="cuda").uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * src.nbytes * 20 / (start.elapsed_time(end) / 1e3)


async def _run(args) -> dict:
    import torch
    import transformers

    from services.worker.backends import build_engine
    from services.worker.loading import LoadedModel
    from services.worker.settings import WorkerSettings

    model, device, dtype = _model(args.tiny)
    model.generation_config.eos_token_id = None  # fixed length: never stop early

    class Ids:  # the engine needs only ids and a warm-up encode from a tokenizer
        eos_token_id = None
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1, 15043]}

    out = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "runs": [],
    }
    levels = [int(x) for x in args.levels.split(",")]
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    if device == "cuda":
        out["copy_bandwidth_gb_s"] = round(_copy_bandwidth() / 1e9, 1)
        out["bound_tok_s_batch1"] = round(out["copy_bandwidth_gb_s"] * 1e9 / weight_bytes, 1)
    runs = [(engine, "on") for engine in args.engines.split(",")]
    if args.graphs_off:
        runs += [(engine, "off") for engine in args.engines.split(",")]
    for engine_name, graphs in runs:
        settings = WorkerSettings(
            engine=engine_name,
            device=device,
            dtype=dtype,
            cuda_graphs=graphs,
            max_batch=max(levels),
            cache_tokens=args.cache_tokens,
            block_size=args.block_size,
            max_batch_tokens=args.batch_tokens,
            max_new_tokens=args.new,
            warmup=False,
        )
        loaded = LoadedModel(
            model=model,
            tokenizer=Ids(),
            name="tinyllama-shaped",
            device=device,
            dtype=dtype,
            is_demo=False,
        )
        engine = build_engine(loaded=loaded, settings=settings)
        t = time.perf_counter()
        await engine.start()
        await _round(engine, n=2, prompt_len=args.prompt, new=8, seed=99)  # warm-up
        setup = time.perf_counter() - t
        for n in levels:
            if time.perf_counter() - T0 > args.budget:
                print(f"time budget reached: skipping {engine_name} n={n}", flush=True)
                continue
            row = await _round(engine, n=n, prompt_len=args.prompt, new=args.new, seed=n)
            row.update({"engine": engine_name, "cuda_graphs": graphs, "setup_s": round(setup, 1)})
            if n == 1 and "bound_tok_s_batch1" in out:
                row["of_bound"] = round(row["tok_s"] / out["bound_tok_s_batch1"], 3)
            print(json.dumps(row), flush=True)
            out["runs"].append(row)
        await engine.stop()
    return out


def main() -> int:
    """Run and print; JSON to $OUT/gpu_engine.json when OUT is set."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--levels", default="1,32,128")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--cache-tokens", type=int, default=262_144)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--budget", type=float, default=240.0)
    p.add_argument("--engines", default="static,transformers", help="TINYLLAMA_ENGINE values")
    p.add_argument("--graphs-off", action="store_true", help="also run each engine without")
    args = p.parse_args()
    if args.tiny:
        args.levels, args.prompt, args.new, args.cache_tokens, args.block_size = (
            "1,4",
            16,
            8,
            4096,
            32,
        )
    result = asyncio.run(_run(args))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_engine.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
