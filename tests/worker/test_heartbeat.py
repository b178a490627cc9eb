"""What a heartbeat tells the gateway about the model: enough to refuse at the door safely."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.jobs.fits import prompt_tokens_at_least
from services.worker.engine import Engine
from services.worker.heartbeat import build_heartbeat, max_token_chars


def _beat(loaded_model, engine_settings, *, cache_tokens: int):
    worker = dataclasses.replace(engine_settings, cache_tokens=cache_tokens, worker_id="w")
    engine = Engine(loaded=loaded_model, settings=worker)  # not started: nothing runs
    return build_heartbeat(engine=engine, settings=worker, ready=True, rate=0.0)


def test_heartbeat_reports_the_context_or_the_smaller_kv_cache(loaded_model, engine_settings):
    """``context_length`` is max_position_embeddings (2048), or the KV cache when smaller."""
    assert loaded_model.model.config.max_position_embeddings == 2048
    assert _beat(loaded_model, engine_settings, cache_tokens=8192).context_length == 2048
    assert _beat(loaded_model, engine_settings, cache_tokens=1024).context_length == 1024


def test_heartbeat_reports_the_longest_vocabulary_entry(loaded_model, engine_settings):
    """``max_token_chars`` is the longest entry of the tokenizer's vocabulary, in characters."""
    vocab = loaded_model.tokenizer.get_vocab()
    beat = _beat(loaded_model, engine_settings, cache_tokens=4096)
    assert beat.max_token_chars == max(len(entry) for entry in vocab)


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=400))
def test_the_gateways_prompt_bound_never_exceeds_the_real_token_count(loaded_model, text):
    """For any text (any Unicode), the bound the gateway refuses by is at most the tokens the
    worker's tokenizer really makes, with or without the chat template."""
    tokenizer = loaded_model.tokenizer
    bound = prompt_tokens_at_least([text], max_token_chars=max_token_chars(tokenizer))
    assert bound <= len(tokenizer(text, add_special_tokens=False)["input_ids"])
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True
    )
    ids = chat["input_ids"] if hasattr(chat, "keys") else chat  # BatchEncoding or list
    assert bound <= len(ids)


def test_the_bound_is_tight_enough_to_matter(loaded_model):
    """Ordinary English needs at most a few times the bound: it refuses absurd prompts."""
    tokenizer = loaded_model.tokenizer
    text = "The llama walked to the gateway and asked the worker for a token. " * 40
    real = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    bound = prompt_tokens_at_least([text], max_token_chars=max_token_chars(tokenizer))
    assert 0 < bound <= real <= 10 * bound
