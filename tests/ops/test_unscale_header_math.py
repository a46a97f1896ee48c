"""Host unit test of the loss-scaling element math shared by the CPU and CUDA code (csrc/include/jepa/amp_math.h).

Compiles a small C++ program against the header with the system C++ compiler (skipped when there is none)
and checks, against numpy/torch: the non-finite tests and branch-free flags for every float16 and bfloat16
bit pattern and for float32 edge and random bits, unscale_value against a float32 product (and exact
pass-through at inv_scale == 1), and update_scale against torch._amp_update_scale_ on random states.
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
#include "jepa/amp_math.h"
#include "jepa/dtype.h"

template <typename T> static std::vector<T> read_all(const std::string& path) {
  std::vector<T> v; FILE* f = std::fopen(path.c_str(), "rb"); if (!f) return v;
  T x; while (std::fread(&x, sizeof(T), 1, f) == 1) v.push_back(x);
  std::fclose(f); return v;
}
template <typename T> static void write_all(const std::string& path, const std::vector<T>& v) {
  FILE* f = std::fopen(path.c_str(), "wb"); std::fwrite(v.data(), sizeof(T), v.size(), f); std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  // 1. every 16-bit pattern: [f16 bool, f16 flag != 0, bf16 bool, bf16 flag != 0]
  std::vector<std::uint8_t> h16(4 * 65536);
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    h16[4 * h + 0] = jepa::f16_bits_nonfinite(b);
    h16[4 * h + 1] = jepa::f16_nonfinite_flag(b) != 0;
    h16[4 * h + 2] = jepa::bf16_bits_nonfinite(b);
    h16[4 * h + 3] = jepa::bf16_nonfinite_flag(b) != 0;
  }
  write_all(dir + "/h16.bin", h16);
  // 2. float32 bit patterns: [bool, flag != 0]
  auto bits = read_all<std::uint32_t>(dir + "/bits32.bin");
  std::vector<std::uint8_t> f32(2 * bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    f32[2 * i] = jepa::f32_bits_nonfinite(bits[i]);
    f32[2 * i + 1] = jepa::f32_nonfinite_flag(bits[i]) != 0;
  }
  write_all(dir + "/f32.bin", f32);
  // 3. unscale_value on (v, inv) pairs
  auto vi = read_all<float>(dir + "/vinv.bin");
  std::vector<float> out(vi.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = jepa::unscale_value(vi[2 * i], vi[2 * i + 1]);
  write_all(dir + "/unscaled.bin", out);
  // 4. update_scale on states (scale, tracker, found_inf, growth, backoff, interval) stored as doubles
  auto st = read_all<double>(dir + "/states.bin");
  std::vector<double> res;
  for (std::size_t i = 0; i + 6 <= st.size(); i += 6) {
    float scale = static_cast<float>(st[i]);
    auto tracker = static_cast<std::int32_t>(st[i + 1]);
    jepa::update_scale(&scale, &tracker, static_cast<float>(st[i + 2]), st[i + 3], st[i + 4],
                       static_cast<std::int64_t>(st[i + 5]));
    res.push_back(static_cast<double>(scale));
    res.push_back(static_cast<double>(tracker));
  }
  write_all(dir + "/updated.bin", res);
  return 0;
}
"""


def _states(gen: np.random.Generator) -> np.ndarray:
    """Random scaler states plus hand-picked edges: growth to inf (must not grow), NaN found_inf (counts as
    found), a tracker one short of the interval, interval 1, found_inf > 1 (summed over devices)."""
    n = 3000
    scale = np.exp2(gen.integers(-10, 40, n)).astype(np.float64) * gen.choice([1.0, 1.5, 0.7], n)
    tracker = gen.integers(0, 12, n).astype(np.float64)
    found = gen.choice([0.0, 0.0, 0.0, 1.0, 2.0], n)
    growth = gen.choice([2.0, 1.5, 3.1, 1.0001], n)
    backoff = gen.choice([0.5, 0.25, 0.9, 0.3333], n)
    interval = np.maximum(tracker + gen.integers(-2, 3, n), 1.0)
    edges = [
        [3.0e38, 4, 0.0, 2.0, 0.5, 5],  # 6e38 overflows float32: scale stays, tracker resets
        [2.0**16, 0, np.nan, 2.0, 0.5, 2000],  # NaN is a nonzero found_inf
        [2.0**16, 1999, 0.0, 2.0, 0.5, 2000],  # grows now
        [2.0**16, 0, 0.0, 2.0, 0.5, 1],  # interval 1: grows every step
        [1e-30, 3, 1.0, 2.0, 0.5, 2000],  # backs off toward zero
        [2.0**-149, 0, 1.0, 2.0, 0.5, 10],  # the smallest subnormal backs off to 0
    ]
    base = np.stack([scale, tracker, found, growth, backoff, interval], axis=1)
    return np.concatenate([base, np.array(edges, dtype=np.float64)]).astype(np.float64)


@pytest.fixture(scope="module")
def run_program(tmp_path_factory, cxx):
    work = tmp_path_factory.mktemp("amp_header_math")
    src = work / "main.cpp"
    src.write_text(PROGRAM)
    exe = work / "main"
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wdouble-promotion", "-Werror", f"-I{INCLUDE}", str(src), "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"compiling the header test failed:\n{build.stderr}"

    gen = np.random.default_rng(0)
    special = np.array([0x0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x7F7FFFFF,
                        0xFF7FFFFF, 0x00000001, 0x3F800000, 0x7FFFFFFF, 0x807FFFFF], dtype=np.uint32)
    randbits = gen.integers(0, 2**32, size=300_000, dtype=np.uint64).astype(np.uint32)
    # bias toward the exponent-all-ones boundary: any mantissa, both signs, exponents 0xFE and 0xFF
    near = (gen.integers(0, 2**23, 50_000, dtype=np.uint64).astype(np.uint32)
            | (gen.choice([0xFE, 0xFF], 50_000).astype(np.uint32) << 23)
            | (gen.integers(0, 2, 50_000, dtype=np.uint64).astype(np.uint32) << 31))
    bits32 = np.concatenate([special, randbits, near]).astype(np.uint32)
    bits32.tofile(work / "bits32.bin")

    with np.errstate(over="ignore"):  # some products overflow float32 to inf on purpose
        v = (gen.standard_normal(100_000) * gen.choice([1e-3, 1.0, 1e4, 6e4, 3e38], 100_000)).astype(np.float32)
    v[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45]
    inv = gen.choice(np.array([2.0**-16, 1.0, 0.37, 1.0 / 3.0, 2.0**-24, 65536.0], dtype=np.float32), 100_000)
    inv[:12] = 1.0
    vinv = np.stack([v, inv], axis=1).astype(np.float32)
    vinv.tofile(work / "vinv.bin")

    states = _states(gen)
    states.tofile(work / "states.bin")

    subprocess.run([str(exe), str(work)], check=True)
    return {"dir": work, "bits32": bits32, "v": v, "inv": inv, "states": states}


def test_16bit_nonfinite_tests_every_bit_pattern(run_program):
    got = np.fromfile(run_program["dir"] / "h16.bin", dtype=np.uint8).reshape(65536, 4).astype(bool)
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    want_f16 = ~np.isfinite(patterns.view(np.float16).astype(np.float32))
    want_bf16 = ~torch.isfinite(torch.from_numpy(patterns.view(np.int16)).view(torch.bfloat16)).numpy()
    assert want_f16.sum() == 2 * 1024 and want_bf16.sum() == 2 * 128  # inf and NaN of both signs
    assert np.array_equal(got[:, 0], want_f16) and np.array_equal(got[:, 1], want_f16)
    assert np.array_equal(got[:, 2], want_bf16) and np.array_equal(got[:, 3], want_bf16)


def test_float32_nonfinite_tests(run_program):
    bits = run_program["bits32"]
    got = np.fromfile(run_program["dir"] / "f32.bin", dtype=np.uint8).reshape(-1, 2).astype(bool)
    want = ~np.isfinite(bits.view(np.float32))
    assert want.any() and (~want).any()
    assert np.array_equal(got[:, 0], want)
    assert np.array_equal(got[:, 1], want)


def test_unscale_value_is_a_float32_product_and_identity_at_one(run_program):
    v, inv = run_program["v"], run_program["inv"]
    got = np.fromfile(run_program["dir"] / "unscaled.bin", dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        want = np.where(inv == 1.0, v, (v * inv).astype(np.float32)).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    one = inv == 1.0
    # identity at inv_scale == 1: the very same bits, NaN payload included
    assert np.array_equal(got[one].view(np.uint32), v[one].view(np.uint32))
    # matches torch's reference op element for element
    ref = torch.from_numpy(v.copy())
    for s in np.unique(inv):
        sel = torch.from_numpy(inv == s)
        part = ref[sel].clone()
        torch._amp_foreach_non_finite_check_and_unscale_([part], torch.zeros(()), torch.tensor(float(s)))
        g = torch.from_numpy(got[inv == s])
        assert torch.equal(torch.isnan(part), torch.isnan(g))
        assert torch.equal(part[~torch.isnan(part)], g[~torch.isnan(g)])


def test_update_scale_matches_torch(run_program):
    states = run_program["states"]
    got = np.fromfile(run_program["dir"] / "updated.bin", dtype=np.float64).reshape(-1, 2)
    for k, (scale, tracker, found, growth, backoff, interval) in enumerate(states):
        s = torch.tensor(scale, dtype=torch.float32)
        t = torch.tensor(int(tracker), dtype=torch.int32)
        torch._amp_update_scale_(s, t, torch.tensor(found, dtype=torch.float32), float(growth), float(backoff), int(interval))
        assert got[k, 1] == t.item(), f"state {k}: tracker {got[k, 1]} != torch's {t.item()}"
        assert np.float32(got[k, 0]).view(np.uint32) == s.numpy().view(np.uint32), (
            f"state {k} {states[k].tolist()}: scale {got[k, 0]!r} != torch's {s.item()!r}"
        )
    # the hand-picked edges behave as documented
    edges = got[-6:]
    assert edges[0, 0] == np.float32(3.0e38) and edges[0, 1] == 0  # no growth to inf
    assert edges[1, 0] == 2.0**15 and edges[1, 1] == 0  # NaN found_inf backs off
    assert edges[2, 0] == 2.0**17 and edges[2, 1] == 0
    assert edges[3, 0] == 2.0**17 and edges[3, 1] == 0
    assert edges[5, 0] == 0.0
