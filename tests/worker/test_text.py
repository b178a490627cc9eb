"""Token ids to text deltas: stop sequences and partial characters."""

from __future__ import annotations

from services.worker.text import TextStream


class CharTokenizer:
    """One token per character (id = code point), enough to pin the text logic."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def _ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_deltas_concatenate_to_the_text():
    """Without stops, the deltas add up to the decoded text."""
    stream = TextStream(CharTokenizer(), stop=[])
    parts = [stream.push(_ids(c)) for c in "hello"] + [stream.flush()]
    assert "".join(parts) == "hello"


def test_stop_sequence_is_cut_and_never_shown():
    """Text stops before the stop sequence; the stop itself is never emitted."""
    stream = TextStream(CharTokenizer(), stop=["END"])
    shown = "".join(stream.push(_ids(c)) for c in "abcENDxyz")
    assert shown == "abc"
    assert stream.stopped
    assert stream.text == "abc"


def test_held_back_text_is_released_when_no_stop_follows():
    """A prefix of a stop sequence is held, then released at the end."""
    stream = TextStream(CharTokenizer(), stop=["END"])
    shown = "".join(stream.push(_ids(c)) for c in "abEN")
    assert shown == "ab"
    assert stream.flush() == "EN"


def test_partial_character_waits_for_its_bytes():
    """A trailing replacement character (half a UTF-8 char) is not shown yet."""
    stream = TextStream(CharTokenizer(), stop=[])
    assert stream.push([ord("a"), 0xFFFD]) == "a"


def test_resume_continues_offsets():
    """A resumed stream starts where the earlier run's shown text ended."""
    stream = TextStream(CharTokenizer(), stop=[], prefix_ids=_ids("abc"), shown=3)
    assert stream.push(_ids("d")) == "d"
    assert stream.text == "abcd"


def test_chat_messages_use_the_chat_template(loaded_model):
    """Chat turns are rendered with the tokenizer's template, ending in the assistant cue."""
    from services.protocol.messages import ChatMessage, GenerateRequest
    from services.worker.runner import encode_prompt

    tok = loaded_model.tokenizer
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hello"),
    ]
    ids = encode_prompt(tok, GenerateRequest(prompt="Hello"), messages=messages)
    text = tok.decode(ids)
    assert text.index("<|system|>") < text.index("<|user|>") < text.rindex("<|assistant|>")
    plain = encode_prompt(tok, GenerateRequest(prompt="Hello"))
    assert "<|user|>" not in tok.decode(plain)
