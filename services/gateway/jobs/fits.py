"""Will a request fit the served model's context? Decided at the door, without a tokenizer.

The gateway has no tokenizer, so it cannot count a prompt's tokens; it can bound them
from below. A worker reports, in its heartbeat, its context (``context_length``: the
model's ``max_position_embeddings``, or the KV cache if smaller) and the longest
entry of its tokenizer's vocabulary in characters (``max_token_chars``, ``L``). No
token stands for more than ``L`` characters of text, so a prompt of ``c`` characters
needs at least ``ceil(c / L)`` tokens, and the chat template only adds more. Whitespace,
control characters and combining marks are not counted (a tokenizer's normalizer may
drop or merge them), and ``c`` is the smaller of the NFC and NFKC forms' counts (it may
apply either). The rule:

    refuse when  max_new_tokens + ceil(c / L)  >  context_length

which refuses only what the worker would refuse anyway, and in particular any request
whose ``max_new_tokens`` alone fills the context. Everything else goes to the worker,
which counts exactly and fails what does not fit with ``request_too_large``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable

_ASCII_SKIPPED = str.maketrans("", "", "".join(map(chr, [*range(33), 127])))


class ContextTooLong(Exception):
    """Prompt plus ``max_new_tokens`` cannot fit the served model: refused before queueing.

    ``path`` names the field to change: the token limit when it alone fills the context,
    else the prompt.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def _counted(text: str) -> int:
    if text.isascii():  # NFC and NFKC leave ASCII alone; no marks in it
        return len(text.translate(_ASCII_SKIPPED))
    return sum(1 for ch in text if not ch.isspace() and unicodedata.category(ch)[0] not in "CMZ")


def counted_chars(texts: Iterable[str]) -> int:
    """The characters of ``texts`` that every tokenizer must cover with some token."""
    total = 0
    for text in texts:
        if text.isascii():
            total += _counted(text)
        else:
            forms = (unicodedata.normalize(form, text) for form in ("NFC", "NFKC"))
            total += min(_counted(form) for form in forms)
    return total


def prompt_tokens_at_least(texts: Iterable[str], *, max_token_chars: int) -> int:
    """A lower bound on the tokens ``texts`` take with a vocabulary whose longest entry is
    ``max_token_chars`` characters."""
    return math.ceil(counted_chars(texts) / max(1, max_token_chars))


def check_fits(
    texts: Iterable[str],
    *,
    max_new_tokens: int,
    context_length: int,
    max_token_chars: int | None,
    model: str,
    prompt_path: str,
    limit_path: str,
) -> None:
    """Raise ``ContextTooLong`` if ``max_new_tokens`` plus the prompt's lower bound cannot fit.

    Without ``max_token_chars`` (an older worker) the prompt's bound is 0: only
    ``max_new_tokens`` is checked. The message states the numbers: what was asked, the
    bound, and the context that applies.
    """
    prompt = prompt_path.removeprefix("$.")
    limit = limit_path.removeprefix("$.")
    least = prompt_tokens_at_least(texts, max_token_chars=max_token_chars) if max_token_chars else 0
    if max_new_tokens + least <= context_length:
        return
    if max_new_tokens >= context_length:
        raise ContextTooLong(
            f"{limit} is {max_new_tokens}, but {model} holds at most {context_length} tokens, "
            f"{prompt} included: {limit} must be at most {context_length - max(1, least)}",
            path=limit_path,
        )
    raise ContextTooLong(
        f"{prompt} needs at least {least} tokens and {limit} is {max_new_tokens}: "
        f"{least + max_new_tokens} is more than the {context_length} tokens {model} holds; "
        f"shorten {prompt} or lower {limit}",
        path=prompt_path,
    )
