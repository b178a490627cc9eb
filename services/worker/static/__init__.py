"""Our own engine for the Llama family: static KV cache, fused weights, CUDA graphs on decode.

- ``weights``: the tensors of a loaded ``LlamaForCausalLM``, QKV and gate/up fused;
- ``cache``: the static KV cache and its slots;
- ``step``: the forward pass (prefill chunks, decode steps) and the bucket sizes;
- ``graphs``: decode steps as CUDA graphs, one per bucket (eager on a CPU);
- ``sampling``: next tokens per row, with per-request seeds;
- ``scheduler``: admission, prefill chunks and the decode batch (no torch);
- ``loop``: the generation thread that runs them;
- ``engine``: ``StaticEngine``, the worker's engine interface over all of it.
"""
