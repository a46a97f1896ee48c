"""CRC32C of jepa._C against the standard check value and a bitwise pure-Python oracle."""

from __future__ import annotations

import random

import pytest

from jepa import _C


def crc32c_bitwise(data: bytes, crc: int = 0) -> int:
    """Textbook bit-at-a-time CRC32C (reflected polynomial 0x82F63B78): the independent oracle."""
    c = crc ^ 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


IMPLS = ["auto", "portable"] + (["hardware"] if _C.crc32c_hardware() else [])


@pytest.mark.parametrize("impl", IMPLS)
def test_crc32c_check_value(impl):
    assert _C.crc32c(b"123456789", impl=impl) == 0xE3069283
    assert _C.crc32c(b"", impl=impl) == 0
    assert crc32c_bitwise(b"123456789") == 0xE3069283


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 1000, 8191, 8192, 8193, 20011])
def test_crc32c_matches_bitwise_oracle_at_odd_sizes_and_offsets(impl, n):
    rng = random.Random(n)
    buf = bytes(rng.getrandbits(8) for _ in range(n + 5))
    for off in (0, 1, 3):  # unaligned starts exercise the byte-wise prologue
        data = buf[off : off + n]
        assert _C.crc32c(data, impl=impl) == crc32c_bitwise(data)


def test_crc32c_large_buffer_hardware_equals_portable_and_extends():
    rng = random.Random(0)
    data = rng.randbytes(3 * 2**20 + 13)
    whole = _C.crc32c(data, impl="portable")
    assert _C.crc32c(data) == whole
    cut = 1_234_567
    assert _C.crc32c(data[cut:], crc=_C.crc32c(data[:cut])) == whole


@pytest.mark.parametrize("cut", [0, 1, 100, 4095])
def test_crc32c_combine(cut):
    rng = random.Random(cut)
    data = rng.randbytes(4096 + 77)
    a, b = data[:cut], data[cut:]
    assert _C.crc32c_combine(crc32c_bitwise(a), crc32c_bitwise(b), len(b)) == crc32c_bitwise(data)


def test_crc32c_rejects_bad_impl_and_non_contiguous():
    with pytest.raises(ValueError, match="impl"):
        _C.crc32c(b"abc", impl="fast")
    import numpy as np

    with pytest.raises(ValueError, match="contiguous"):
        _C.crc32c(np.arange(10, dtype=np.uint8)[::2])
