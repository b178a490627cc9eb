"""Our own engine for the Llama family: static KV cache, fused weights, CUDA graphs on decode.

``weights`` takes the tensors out of a loaded ``LlamaForCausalLM``; ``cache``
holds the static KV cache; ``step`` is the forward pass (prefill chunks and
decode steps) and its CUDA graphs; ``sampling`` picks tokens per row with
per-request seeds; ``scheduler`` decides each step; ``engine`` serves it to the
worker with the same interface as ``services.worker.engine.Engine``.
"""
