"""Bounded fuzzing of the checkpoint reader: random bytes, mutated and truncated valid files and
random JSON headers must give a clean CheckpointError (or a valid load), never a crash, a hang or
a huge allocation. A few thousand cases in all in CI (derandomized); for a long run set JEPA_FUZZ_EXAMPLES (cases per
test, e.g. JEPA_FUZZ_EXAMPLES=100000 pytest tests/io/test_io_fuzz.py), which also randomizes the cases."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jepa.io as jio

_DIR = tempfile.mkdtemp(prefix="jepa-io-fuzz-")
atexit.register(shutil.rmtree, _DIR, True)
_FILE = os.path.join(_DIR, "f.pt")
_LONG = int(os.environ.get("JEPA_FUZZ_EXAMPLES", "0") or 0)
_SETTINGS = settings(
    max_examples=_LONG or 600, deadline=None, derandomize=not _LONG, suppress_health_check=list(HealthCheck)
)


def _valid_file() -> bytes:
    gen = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(5, 3, generator=gen), "b": torch.arange(7, dtype=torch.int16), "c": torch.tensor(True),
             "e": torch.empty(0), "meta": {"k": (1, 2.5, "s"), 3: [None, float("inf")]}}
    path = jio.save(state, os.path.join(_DIR, "valid.pt"))
    return path.read_bytes()


VALID = _valid_file()


def _load(data: bytes, verify: bool = True):
    with open(_FILE, "wb") as fh:
        fh.write(data)
    try:
        return jio.load(_FILE, verify=verify)
    except jio.CheckpointError as exc:
        assert "f.pt" in str(exc)
        return None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # random bytes that look like a legacy torch file
@_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes(data):
    _load(data)


@_SETTINGS
@given(st.integers(0, 2**64 - 1), st.binary(max_size=256))
def test_random_header_length_and_body(n, body):
    _load(struct.pack("<Q", n) + body)


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4), st.booleans())
def test_mutated_valid_file_is_refused_or_identical(edits, verify):
    data = bytearray(VALID)
    for pos, value in edits:
        data[pos] = value
    out = _load(bytes(data), verify=verify)
    if verify and bytes(data) != VALID and out is not None:
        # Only a change that no checksum covers may load: the padding spaces of the header.
        n = struct.unpack("<Q", VALID[:8])[0]
        changed = [i for i in range(len(VALID)) if data[i] != VALID[i]]
        header = VALID[8 : 8 + n]
        json_end = 8 + len(header.rstrip(b" "))
        assert all(json_end <= i < 8 + n for i in changed), changed


@_SETTINGS
@given(st.integers(0, len(VALID) - 1))
def test_every_truncation_is_refused(size):
    assert _load(VALID[:size]) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_entry = st.fixed_dictionaries(
    {"dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "X"]),
     "shape": st.lists(st.integers(-2, 2**40), max_size=3),
     "data_offsets": st.lists(st.integers(-1, 64), min_size=0, max_size=3)},
    optional={"extra": _json},
)


@_SETTINGS
@given(st.dictionaries(st.text(max_size=5), _entry | _json, max_size=4), st.binary(max_size=64))
def test_random_json_headers(header, data):
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    _load(struct.pack("<Q", len(body)) + body + data)
