"""Host unit test of the element math shared by the CPU and CUDA code (csrc/include/jepa/*.h).

Compiles a small C++ program against the headers with the system C++ compiler (skipped when there is
none) and checks, against numpy/torch: float16 <-> float32 conversions for every half bit pattern and
for edge and random floats, bfloat16 rounding, lerp's exact endpoints and accuracy, and the
multi-tensor index lookup.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

INCLUDE = Path(__file__).resolve().parents[2] / "csrc" / "include"

PROGRAM = r"""
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>
#include "jepa/dtype.h"
#include "jepa/ema_math.h"
#include "jepa/multi_tensor.h"

template <typename T> static std::vector<T> read_all(const char* path) {
  std::vector<T> v; FILE* f = std::fopen(path, "rb"); if (!f) return v;
  T x; while (std::fread(&x, sizeof(T), 1, f) == 1) v.push_back(x);
  std::fclose(f); return v;
}
template <typename T> static void write_all(const char* path, const std::vector<T>& v) {
  FILE* f = std::fopen(path, "wb"); std::fwrite(v.data(), sizeof(T), v.size(), f); std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::string dir = argv[1];
  // 1. every half bit pattern -> float
  std::vector<float> h2f(65536);
  for (std::uint32_t h = 0; h < 65536; ++h) h2f[h] = jepa::fp16_bits_to_float_portable(static_cast<std::uint16_t>(h));
  write_all((dir + "/h2f.bin").c_str(), h2f);
  // 2. floats -> half and bfloat16
  auto floats = read_all<float>((dir + "/floats.bin").c_str());
  std::vector<std::uint16_t> f2h(floats.size()), f2b(floats.size());
  std::vector<float> b2f(floats.size());
  for (std::size_t i = 0; i < floats.size(); ++i) {
    f2h[i] = jepa::float_to_fp16_bits_portable(floats[i]);
    f2b[i] = jepa::float_to_bf16_bits(floats[i]);
    b2f[i] = jepa::bf16_bits_to_float(f2b[i]);
  }
  write_all((dir + "/f2h.bin").c_str(), f2h);
  write_all((dir + "/f2b.bin").c_str(), f2b);
  write_all((dir + "/b2f.bin").c_str(), b2f);
  // 3. lerp on (a, b, w) triples
  auto abw = read_all<float>((dir + "/abw.bin").c_str());
  std::vector<float> lerp(abw.size() / 3);
  for (std::size_t i = 0; i < lerp.size(); ++i) lerp[i] = jepa::lerp(abw[3 * i], abw[3 * i + 1], abw[3 * i + 2]);
  write_all((dir + "/lerp.bin").c_str(), lerp);
  // 4. locate_tensor over prefix sums (with empty tensors) for every index
  auto prefix = read_all<std::int64_t>((dir + "/prefix.bin").c_str());
  const int n = static_cast<int>(prefix.size()) - 1;
  std::vector<std::int32_t> owner(static_cast<std::size_t>(prefix.back()));
  for (std::int64_t i = 0; i < prefix.back(); ++i) owner[static_cast<std::size_t>(i)] = jepa::locate_tensor(prefix.data(), n, i);
  write_all((dir + "/owner.bin").c_str(), owner);
  // 5. for_each_piece over [3, total - 2): pieces (tensor, lo, hi)
  std::vector<std::int64_t> pieces;
  jepa::for_each_piece(prefix.data(), n, 3, prefix.back() - 2, [&](int t, std::int64_t lo, std::int64_t hi) {
    pieces.push_back(t); pieces.push_back(lo); pieces.push_back(hi);
  });
  write_all((dir + "/pieces.bin").c_str(), pieces);
  // 6. per-tensor chunks of 4 elements (the CUDA kernels' layout): chunk prefix sums, then every chunk's
  //    (tensor, begin, end) and the end of its 2-wide vector part
  std::vector<std::int64_t> chunk_prefix(prefix.size());
  jepa::fill_chunk_prefix(prefix.data(), n, 4, chunk_prefix.data());
  write_all((dir + "/chunk_prefix.bin").c_str(), chunk_prefix);
  std::vector<std::int64_t> chunks;
  for (std::int64_t c = 0; c < chunk_prefix.back(); ++c) {
    const jepa::ChunkRange r = jepa::locate_chunk(chunk_prefix.data(), prefix.data(), n, c, 4);
    chunks.push_back(r.tensor); chunks.push_back(r.begin); chunks.push_back(r.end);
    chunks.push_back(jepa::vector_end(r.begin, r.end, 2));
  }
  write_all((dir + "/chunks.bin").c_str(), chunks);
  return 0;
}
"""


@pytest.fixture(scope="module")
def run_program(tmp_path_factory, cxx):
    work = tmp_path_factory.mktemp("header_math")
    src = work / "main.cpp"
    src.write_text(PROGRAM)
    exe = work / "main"
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}", str(src), "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"compiling the header test failed:\n{build.stderr}"

    gen = np.random.default_rng(0)
    specials = np.array(
        [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 1e6, np.inf, -np.inf, np.nan, 2.0**-24, 2.0**-25,
         2.0**-25 * 1.0001, 2.0**-14, 2.0**-14 * 0.99, 3 * 2.0**-26, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 3.4e38],
        dtype=np.float32,
    )
    randbits = gen.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    halfrange = (gen.standard_normal(100_000) * gen.choice([1e-6, 1e-3, 1.0, 1e3, 6e4], 100_000)).astype(np.float32)
    floats = np.concatenate([specials, -specials, randbits, halfrange]).astype(np.float32)
    floats.tofile(work / "floats.bin")

    a = gen.standard_normal(50_000).astype(np.float32) * 10
    b = gen.standard_normal(50_000).astype(np.float32) * 10
    w = gen.random(50_000).astype(np.float32)
    w[:1000], w[1000:2000], w[2000:3000] = 0.0, 1.0, 0.5
    np.stack([a, b, w], axis=1).astype(np.float32).tofile(work / "abw.bin")

    sizes = [0, 3, 0, 0, 1, 7, 0, 12, 5, 0, 8, 9]
    prefix = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    prefix.tofile(work / "prefix.bin")

    subprocess.run([str(exe), str(work)], check=True)
    return {"dir": work, "floats": floats, "a": a, "b": b, "w": w, "sizes": sizes, "prefix": prefix}


def test_fp16_to_float_every_bit_pattern(run_program):
    got = np.fromfile(run_program["dir"] / "h2f.bin", dtype=np.float32)
    want = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_float_to_fp16_rounds_to_nearest_even(run_program):
    floats = run_program["floats"]
    got = np.fromfile(run_program["dir"] / "f2h.bin", dtype=np.uint16)
    with np.errstate(over="ignore"):
        want = floats.astype(np.float16)
    nan = np.isnan(floats)
    assert np.all(np.isnan(got[nan].view(np.float16)))
    mismatch = np.flatnonzero(got[~nan] != want[~nan].view(np.uint16))
    assert mismatch.size == 0, f"first mismatches at {floats[~nan][mismatch[:5]]}"


def test_bfloat16_matches_torch(run_program):
    floats = run_program["floats"]
    got = np.fromfile(run_program["dir"] / "f2b.bin", dtype=np.uint16)
    want = torch.from_numpy(floats).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(floats)
    assert np.all(got[nan] & 0x7FFF > 0x7F80)
    assert np.array_equal(got[~nan], want[~nan])
    widened = np.fromfile(run_program["dir"] / "b2f.bin", dtype=np.float32)
    assert np.array_equal(widened[~nan], (got[~nan].astype(np.uint32) << 16).view(np.float32))


def test_lerp_endpoints_and_accuracy(run_program):
    a, b, w = run_program["a"], run_program["b"], run_program["w"]
    got = np.fromfile(run_program["dir"] / "lerp.bin", dtype=np.float32)
    assert np.array_equal(got[:1000], a[:1000]), "w == 0 must return a exactly"
    assert np.array_equal(got[1000:2000], b[1000:2000]), "w == 1 must return b exactly"
    ref = a.astype(np.float64) + w.astype(np.float64) * (b.astype(np.float64) - a.astype(np.float64))
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel <= 1e-6
    torch_lerp = torch.lerp(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(w)).numpy()
    assert np.allclose(got, torch_lerp, rtol=1e-6, atol=1e-6)


def test_locate_tensor_and_pieces(run_program):
    sizes, prefix = run_program["sizes"], run_program["prefix"]
    owner = np.fromfile(run_program["dir"] / "owner.bin", dtype=np.int32)
    want = np.concatenate([np.full(s, i, dtype=np.int32) for i, s in enumerate(sizes)])
    assert np.array_equal(owner, want)
    pieces = np.fromfile(run_program["dir"] / "pieces.bin", dtype=np.int64).reshape(-1, 3)
    begin, end = 3, int(prefix[-1]) - 2
    covered = []
    for t, lo, hi in pieces:
        assert sizes[t] > 0 and 0 <= lo < hi <= sizes[t]
        covered.extend(range(int(prefix[t] + lo), int(prefix[t] + hi)))
    assert covered == list(range(begin, end))


def test_per_tensor_chunks_cover_each_tensor_once_from_aligned_starts(run_program):
    """The CUDA kernels' chunking (jepa::fill_chunk_prefix / locate_chunk / vector_end, chunk 4, vectors
    of 2): chunks never straddle tensors, start at multiples of the chunk size inside their tensor (so
    they keep its alignment), cover every element once in order, and the vector part ends on a whole
    vector."""
    sizes = run_program["sizes"]
    chunk_prefix = np.fromfile(run_program["dir"] / "chunk_prefix.bin", dtype=np.int64)
    want_prefix = np.concatenate([[0], np.cumsum([-(-s // 4) for s in sizes])])
    assert np.array_equal(chunk_prefix, want_prefix)
    chunks = np.fromfile(run_program["dir"] / "chunks.bin", dtype=np.int64).reshape(-1, 4)
    seen = {i: [] for i in range(len(sizes))}
    for t, begin, end, vend in chunks:
        assert sizes[t] > 0, "an empty tensor owns no chunk"
        assert begin % 4 == 0 and begin < end <= min(begin + 4, sizes[t])
        assert begin <= vend <= end and (vend - begin) % 2 == 0 and end - vend < 2
        seen[int(t)].extend(range(int(begin), int(end)))
    for i, s in enumerate(sizes):
        assert seen[i] == list(range(s))
