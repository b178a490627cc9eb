"""The wire contract's key names: ARQ's own spelled the same, every key built in one place."""

from __future__ import annotations

import arq.constants

from services.protocol import names
from services.protocol.scripts import lua_key


def test_arq_key_prefixes_are_arqs_own():
    """The prefixes the contract repeats (to stay free of arq) are exactly arq's."""
    assert names.ARQ_JOB_PREFIX == arq.constants.job_key_prefix
    assert names.ARQ_RESULT_PREFIX == arq.constants.result_key_prefix
    assert names.ARQ_IN_PROGRESS_PREFIX == arq.constants.in_progress_key_prefix
    assert names.ARQ_ABORT_SET == arq.constants.abort_jobs_ss
    assert names.QUEUE_NAME == arq.constants.default_queue_name


def test_lua_key_builds_the_same_key_as_python():
    """A key built in Lua from ``lua_key`` is the Python function's key, prefix and suffix."""
    assert lua_key(names.events_key, "id") == "('tl:job:' .. id .. ':events')"
    assert lua_key(names.arq_job_key, "id") == "('arq:job:' .. id)"
