"""A small random Llama and a tokenizer trained here: the offline stand-in model.

Built with the same classes as a real checkpoint, saved with
``save_pretrained`` and loaded back through the Auto classes, so tests and
offline demos exercise the real loading path on small data.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("tinyllama.worker.demo")

DEMO_NAME = "tinyllama-demo"
DEMO_VERSION = "1"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
# TinyLlama-Chat's (Zephyr) template, so chat prompts look the same as on the real model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_WORDS = (
    "the a an llama model token prompt answer question queue worker gateway gpu cloud cost budget "
    "hello world tiny fast slow small large idle warm cold batch stream result job request user "
    "time second minute hour day night stop start run wait ready health cache key value text "
    "is are was were be been has have had do does did will would can could should may might "
    "and or but if then else when while for with without from into onto over under about"
).split()


def default_demo_path(*, cache_dir: Path) -> Path:
    """Where the demo model lives inside a cache folder."""
    return cache_dir / f"{DEMO_NAME}-v{DEMO_VERSION}"


def _corpus(*, lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        sentence = " ".join(words).capitalize()
        out.append(sentence + rng.choice([".", "?", "!", ", 42.", " 2026."]))
    return out


def _build_tokenizer(*, vocab_size: int, seed: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(lines=4000, seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_demo_model(path: Path, *, seed: int = 1234, vocab_size: int = 1024) -> Path:
    """Build the demo model into ``path`` (atomically) unless it is already there."""
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    log.info("building demo model", extra={"path": str(path)})
    tokenizer = _build_tokenizer(vocab_size=vocab_size, seed=seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=path.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "DEMO_MODEL").write_text(f"{DEMO_NAME} v{DEMO_VERSION}, random weights\n")
        try:
            os.replace(staging, path)
        except OSError:
            # Another process built it first: theirs is as good as ours.
            if not (path / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m services.worker.demo_model [--out DIR]``: build (or find) the demo model."""
    parser = argparse.ArgumentParser(description="Build the offline demo model.")
    parser.add_argument("--out", type=Path, help="target folder (default: the model cache)")
    args = parser.parse_args(argv)
    from services.worker.settings import load_settings

    out = args.out or default_demo_path(cache_dir=load_settings(os.environ).cache_dir)
    print(build_demo_model(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
