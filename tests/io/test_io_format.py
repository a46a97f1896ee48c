"""jepa.io save/load: round trips of every dtype and of trainer-like states, safetensors
interoperability both ways, legacy torch files, checksum and truncation errors."""

from __future__ import annotations

import json
import math
import os
import random
import struct
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import jepa.io as jio
from jepa import _C

DTYPES = [torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64]


def _rand(shape, dtype, gen):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, generator=gen, dtype=torch.int64).to(dtype)


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.bool else a, b.view(torch.uint8) if b.dtype == torch.bool else b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_every_dtype_with_odd_0d_and_empty_shapes(tmp_path, dtype):
    gen = torch.Generator().manual_seed(DTYPES.index(dtype))
    state = {"odd": _rand((3, 5, 7), dtype, gen), "scalar": _rand((), dtype, gen), "empty": _rand((0, 3), dtype, gen),
             "one": _rand((1,), dtype, gen)}
    path = jio.save(state, tmp_path / "x.pt")
    out = jio.load(path)
    _same({k: v.clone() for k, v in state.items()}, out)
    flat = load_file(str(path))  # the safetensors package reads every tensor of ours
    for k, v in state.items():
        _same(v, flat[k])


def test_round_trip_non_contiguous_and_shared_inputs(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 9, generator=gen)
    state = {"t": base.t(), "slice": base[1:5:2, 3:], "expanded": torch.randn(3, 1, generator=gen).expand(3, 4),
             "same1": base, "same2": base, "neg": torch.randn(4, generator=gen)._neg_view()}
    out = jio.load(jio.save(state, tmp_path / "nc.pt"))
    for k in state:
        assert torch.equal(out[k], state[k].clone()), k
    assert out["same1"] is out["same2"]  # one object in, one object out


def _trainer_like_state():
    gen = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        model(torch.randn(4, 7, generator=gen)).pow(2).mean().backward()
        opt.step()
        sched.step()
    random.seed(3)
    np.random.seed(3)
    return {
        "format": 1,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 2,
        "global_step": 17,
        "best_loss": math.inf,
        "worst": -math.inf,
        "nan": math.nan,
        "history": {"train_loss": [0.5, 0.25], "val_loss": [], "lr": [1e-3, 5e-4]},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "model_config": json.dumps({"dim": 5}),
        "jepa_version": "0.1.0",
        "nested": [(1, 2.5, None, True, "s"), {3: "int key", (1, 2): "tuple key", "$x": "dollar key"}],
        "np_scalar": np.float32(1.5),
        "blob": b"\x00\xffbytes",
        "dtype": torch.bfloat16,
        "size": torch.Size([2, 3]),
    }


def test_round_trip_trainer_state_gives_back_the_same_python_types(tmp_path):
    state = _trainer_like_state()
    out = jio.load(jio.save(state, tmp_path / "trainer.pth"))
    expected = dict(state)
    expected["model"] = dict(state["model"])  # OrderedDict comes back as dict
    _same(expected, out)
    assert isinstance(out["rng"]["python"], tuple) and isinstance(out["rng"]["python"][1], tuple)
    assert isinstance(out["rng"]["numpy"][1], np.ndarray) and out["rng"]["numpy"][1].dtype == np.uint32
    assert list(out["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5]  # int keys
    assert out["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    # the restored RNG states really work
    np.random.set_state(out["rng"]["numpy"])
    random.setstate(out["rng"]["python"])
    torch.set_rng_state(out["rng"]["torch"])
    a = (np.random.rand(), random.random(), torch.rand(1).item())
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    assert a == (np.random.rand(), random.random(), torch.rand(1).item())


def test_loaded_optimizer_state_resumes_bit_identically(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(8, 6)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    jio.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "r.pt")
    ref = torch.nn.Linear(6, 4)
    ref.load_state_dict(model.state_dict())
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    ref_opt.load_state_dict(opt.state_dict())
    loaded = jio.load(tmp_path / "r.pt")
    m2 = torch.nn.Linear(6, 4)
    m2.load_state_dict(loaded["model"])
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    o2.load_state_dict(loaded["optimizer"])  # in-place updates of the mapped tensors: copy on write
    for m, o in ((ref, ref_opt), (m2, o2)):
        for _ in range(2):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    assert torch.equal(ref.weight, m2.weight) and torch.equal(ref.bias, m2.bias)
    again = jio.load(tmp_path / "r.pt")  # the file was not modified by those in-place updates
    assert torch.equal(again["model"]["weight"], model.weight.detach())


def test_file_is_a_valid_safetensors_file_with_our_metadata(tmp_path):
    path = jio.save({"w": torch.arange(10.0), "step": 3}, tmp_path / "m.pt")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0 and raw[8:9] == b"{"
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["jepa.format"] == "jepa.checkpoint/1" and json.loads(meta["jepa.state"])["step"] == 3
    w = header["w"]
    assert w["dtype"] == "F32" and w["shape"] == [10]
    b, e = w["data_offsets"]
    assert int(meta["jepa.crc32c"], 16) == _C.crc32c(raw[8 + n + b : 8 + n + e])
    zeroed = raw[8 : 8 + n].replace(meta["jepa.header_crc32c"].encode(), b"00000000")
    assert int(meta["jepa.header_crc32c"], 16) == _C.crc32c(zeroed)


def test_reads_foreign_safetensors_files(tmp_path):
    gen = torch.Generator().manual_seed(2)
    tensors = {"a": torch.randn(3, 4, generator=gen), "b": torch.randint(0, 9, (5,), generator=gen), "c": torch.zeros(0),
               "h": torch.randn(7, generator=gen).half()}
    save_file(tensors, str(tmp_path / "f.safetensors"), metadata={"k": "v"})
    out = jio.load(tmp_path / "f.safetensors")
    assert set(out) == set(tensors)
    for k in tensors:
        assert torch.equal(out[k], tensors[k])


def test_reads_unaligned_foreign_tensors(tmp_path):
    # a valid safetensors file whose float32 tensor starts at an odd offset
    a, b = torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([1.5, -2.0])
    header = json.dumps({"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "u.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + a.numpy().tobytes() + b.numpy().tobytes())
    out = jio.load(tmp_path / "u.safetensors")
    assert torch.equal(out["a"], a) and torch.equal(out["b"], b)
    assert torch.equal(load_file(str(tmp_path / "u.safetensors"))["b"], b)


def test_reads_legacy_torch_save_files_with_weights_only(tmp_path):
    state = {"model": {"w": torch.randn(3)}, "epoch": 4, "python": [3, [1, 2], None]}
    torch.save(state, tmp_path / "old.pt")
    out = jio.load(tmp_path / "old.pt")
    assert torch.equal(out["model"]["w"], state["model"]["w"]) and out["epoch"] == 4

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(jio.CheckpointError, match="evil.pt"):
        jio.load(tmp_path / "evil.pt")


def test_map_location_and_verify_false(tmp_path):
    path = jio.save({"w": torch.arange(5.0)}, tmp_path / "d.pt")
    assert jio.load(path, map_location=torch.device("cpu"), verify=False)["w"].device.type == "cpu"
    with pytest.raises(TypeError, match="map_location"):
        jio.load(path, map_location=3.5)
    with pytest.raises(TypeError, match="verify"):
        jio.load(path, verify="yes")


def test_bad_arguments_and_unsupported_values(tmp_path):
    with pytest.raises(TypeError, match="mapping"):
        jio.save([1, 2], tmp_path / "a.pt")
    with pytest.raises(TypeError, match="path"):
        jio.save({}, 42)
    with pytest.raises(TypeError, match=r"state\['x'\]\['y'\].*object"):
        jio.save({"x": {"y": object()}}, tmp_path / "a.pt")
    with pytest.raises(TypeError, match="complex"):
        jio.save({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="num_threads"):
        jio.save({}, tmp_path / "a.pt", num_threads=-1)
    assert not any(tmp_path.iterdir())


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        jio.load(tmp_path / "nope.pt")


def _saved(tmp_path):
    gen = torch.Generator().manual_seed(5)
    return jio.save({"first": torch.randn(40, generator=gen), "second": torch.randn(3, 3, generator=gen), "k": 1}, tmp_path / "c.pt")


def test_flipped_data_byte_names_the_tensor(tmp_path):
    path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    b, _ = header["second"]["data_offsets"]
    raw[8 + n + b + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(jio.CheckpointError, match=r"c\.pt.*checksum mismatch in tensor 'second'"):
        jio.load(path)
    assert jio.load(path, verify=False)["k"] == 1  # verify=False skips data checksums


def test_modified_header_fails_the_header_checksum(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    tampered = raw.replace(b'\\"k\\":1', b'\\"k\\":7')
    assert tampered != raw
    path.write_bytes(tampered)
    with pytest.raises(jio.CheckpointError, match="header checksum mismatch"):
        jio.load(path)


def test_truncation_at_every_region_is_refused(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cases = {
        0: "fewer than the 8-byte header length",
        5: "fewer than the 8-byte header length",
        8: f"truncated: header says {n} bytes, file has 8",
        8 + n // 2: f"truncated: header says {n} bytes, file has {8 + n // 2}",
        8 + n: "truncated: header says",
        8 + n + 3: "truncated: header says",
        len(raw) - 1: "truncated: header says",
    }
    for size, message in cases.items():
        path.write_bytes(raw[:size])
        with pytest.raises(jio.CheckpointError, match=message) as info:
            jio.load(path)
        assert "c.pt" in str(info.value)
    path.write_bytes(raw + b"\0")
    with pytest.raises(jio.CheckpointError, match="trailing"):
        jio.load(path)


@pytest.mark.parametrize(
    "header, message",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "overlap"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "gap"),
        ({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, "unknown dtype 'F33'"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "need 12 bytes"),
        ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, "overflows"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "non-negative integer"),
        ({"a": {"dtype": "F32", "shape": [2]}}, "lacks 'data_offsets'"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "end < begin"),
        ({"__metadata__": {"k": 1}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "must be strings"),
    ],
)
def test_invalid_headers_are_refused_before_touching_data(tmp_path, header, message):
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    (tmp_path / "h.pt").write_bytes(struct.pack("<Q", len(body)) + body + bytes(8))
    with pytest.raises(jio.CheckpointError, match=message):
        jio.load(tmp_path / "h.pt")


def test_absurd_header_length_is_refused_without_allocating(tmp_path):
    (tmp_path / "big.pt").write_bytes(struct.pack("<Q", 2**63 - 1) + b"{" + bytes(100))
    with pytest.raises(jio.CheckpointError, match="truncated: header says 9223372036854775807 bytes"):
        jio.load(tmp_path / "big.pt")
    body = b"{" + b" " * (200 << 20)
    with open(tmp_path / "huge.pt", "wb") as fh:
        fh.write(struct.pack("<Q", len(body)))
        fh.write(body)
    with pytest.raises(jio.CheckpointError, match="exceeds the limit"):
        jio.load(tmp_path / "huge.pt")


def test_deep_nesting_in_unknown_fields_is_bounded(tmp_path):
    body = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":' + b"[" * 10000 + b"]" * 10000 + b"}}"
    body += b" " * (-len(body) % 8)
    (tmp_path / "deep.pt").write_bytes(struct.pack("<Q", len(body)) + body + b"\x01")
    with pytest.raises(jio.CheckpointError, match="nesting deeper"):
        jio.load(tmp_path / "deep.pt")


def test_unsupported_value_leaves_the_previous_file_intact(tmp_path):
    path = jio.save({"v": torch.ones(3)}, tmp_path / "keep.pt")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        jio.save({"v": torch.zeros(3), "bad": object()}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["keep.pt"]


def test_write_error_removes_the_tmp_file(tmp_path):
    # Writing into a path whose parent is a file fails at open(); writing over a directory fails at
    # rename(): in both cases nothing is left behind.
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(OSError):
        jio.save({"v": torch.ones(1000)}, tmp_path / "dir.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.pt"]
    assert list((tmp_path / "dir.pt").iterdir()) == []


def test_multi_chunk_checksums_match_single_chunk(tmp_path):
    from jepa.io import _codec, _file

    t = torch.randn(10_001, generator=torch.Generator().manual_seed(9))
    enc = _codec.encode({"t": t})
    stats = _file.write_file(tmp_path / "chunks.pt", enc, {"jepa.format": "x", "jepa.state": "{}"}, num_threads=2, chunk_bytes=1000)
    assert stats["crcs"] == [_C.crc32c(t.numpy().tobytes())]
    reader = _C.CheckpointReader(str(tmp_path / "chunks.pt"))
    for chunk in (7, 4096, 1 << 20):
        result = reader.verify(num_threads=2, chunk_bytes=chunk)
        assert result["bad_tensors"] == [] and result["header_ok"] and result["has_checksums"]


def test_oversized_header_is_refused_at_save_time(tmp_path, monkeypatch):
    from jepa.io import _file

    monkeypatch.setattr(_file, "MAX_HEADER_BYTES", 4096)
    with pytest.raises(ValueError, match="header would be .* bytes"):
        jio.save({"history": list(range(2000))}, tmp_path / "h.pt")
    assert not any(tmp_path.iterdir())


def test_tensor_names_are_stable_flattened_paths_and_unique(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "a.b": torch.zeros(1), "a": {"b": torch.ones(1)}}
    path = jio.save(state, tmp_path / "n.pt")
    names = set(load_file(str(path)))
    expected = {"model.0.weight", "model.0.bias", "a.b", "a.b~1"}
    expected |= {f"optimizer.state.{i}.{k}" for i in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq")}
    assert names == expected
    out = jio.load(path)
    assert torch.equal(out["a.b"], torch.zeros(1)) and torch.equal(out["a"]["b"], torch.ones(1))


@pytest.mark.parametrize("writer", ["jepa", "safetensors"])
def test_unicode_and_escaped_tensor_names_round_trip(tmp_path, writer):
    names = ['quote"and\\backslash', "new\nline\ttab\x01", "naïve-ünï", "emoji-😀", "/slash", "__metadata", ""]
    tensors = {n: torch.full((2,), float(i)) for i, n in enumerate(names)}
    path = tmp_path / "u.safetensors"
    if writer == "jepa":
        jio.save(tensors, path)
    else:
        save_file(tensors, str(path))  # raw UTF-8 in the header (serde_json), not \u escapes
    for loaded in (jio.load(path), load_file(str(path))):
        assert set(loaded) == set(names)
        for n in names:
            assert torch.equal(loaded[n], tensors[n]), n
