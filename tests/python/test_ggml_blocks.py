"""nibble's GGUF block quantizers (Q8_0, Q4_0, Q4_1) against gguf-py's numpy
implementation (`gguf.quants`, package gguf, the port of ggml's reference
quantizers that llama.cpp's converter uses), byte for byte, through the test
program tests/tools/ggml_quant_dump.cc (raw matrix in, ggml blocks out, and
back).

Inputs are F32, F16 and BF16 matrices: random, heavy-tailed with outliers,
and adversarial (exact rounding ties of x * id, +-a pairs for Q4_0's first
largest magnitude, +-65504, constant and zero blocks, the F16 subnormal grid,
F32 subnormals whose 1/d is Inf, uniformly random F16 bit patterns). gguf-py
quantizes float32 (it converts F16 with astype(float32); BF16 is widened by
a 16-bit shift, which is exact), so both sides see the same floats.
Dequantization: gguf.quants.dequantize of nibble's bytes equals nibble's own
F32 dequantization bit for bit.

Two blocks are known to differ between ggml's C reference (which llama-quantize
runs, and nibble follows) and gguf-py; both are asserted explicitly below and
kept out of the random data: a Q4_0 block of zeros whose first element is
-0.0, and a Q4_1 block whose minimum is a zero while zeros of both signs occur.

The program is found through NIBBLE_GGML_DUMP, else in the build tree of
NIBBLE_BIN (set by python_tests.cmake), else in the newest build*/tests/."""

import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from conftest import ROOT

QTYPES = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}


def find_dump():
    env = os.environ.get("NIBBLE_GGML_DUMP", "")
    if env:
        return Path(env)
    nibble_bin = os.environ.get("NIBBLE_BIN", "")
    if nibble_bin:
        d = Path(nibble_bin).resolve().parent
        for build in (d, *d.parents):
            if (build / "CMakeCache.txt").is_file():
                candidate = build / "tests" / "ggml_quant_dump"
                if candidate.is_file():
                    return candidate
                break
    found = sorted(ROOT.glob("build*/tests/ggml_quant_dump"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


DUMP = find_dump()
pytestmark = pytest.mark.skipif(
    DUMP is None or not DUMP.is_file(),
    reason="ggml_quant_dump is not built (set NIBBLE_GGML_DUMP)")


def run_dump(tmp_path, op, scheme, dtype, data, rows, cols, isa="auto", threads=1):
    src = tmp_path / f"{op}.in"
    dst = tmp_path / f"{op}.out"
    src.write_bytes(np.ascontiguousarray(data).tobytes())
    r = subprocess.run([str(DUMP), op, scheme, dtype, str(rows), str(cols), str(src),
                        str(dst), isa, str(threads)], capture_output=True, text=True)
    return r, (dst.read_bytes() if r.returncode == 0 else None)


def nibble_quantize(tmp_path, scheme, dtype, data, isa="auto", threads=1):
    rows, cols = data.shape
    r, out = run_dump(tmp_path, "quantize", scheme, dtype, data, rows, cols, isa, threads)
    assert r.returncode == 0, r.stderr
    return np.frombuffer(out, dtype=np.uint8).reshape(rows, -1)


def nibble_dequantize(tmp_path, scheme, blocks, rows, cols, isa="auto"):
    r, out = run_dump(tmp_path, "dequantize", scheme, "f32", blocks, rows, cols, isa)
    assert r.returncode == 0, r.stderr
    return np.frombuffer(out, dtype=np.float32).reshape(rows, cols)


def gguf_quantize(scheme, x32):
    # Blocks whose 1/d overflows (F32 subnormal input) make numpy warn about
    # Inf/NaN; it casts those codes to 0, as ggml's compiled code does.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return quants.quantize(x32, QTYPES[scheme])


def assert_same_blocks(scheme, want, got, what):
    want = np.asarray(want, dtype=np.uint8).reshape(-1, BLOCK_BYTES[scheme])
    got = np.asarray(got, dtype=np.uint8).reshape(-1, BLOCK_BYTES[scheme])
    assert want.shape == got.shape, (what, want.shape, got.shape)
    bad = np.nonzero(np.any(want != got, axis=1))[0]
    assert bad.size == 0, (
        f"{what}: {bad.size} of {want.shape[0]} blocks differ; first block {bad[0]}:\n"
        f"  gguf-py {want[bad[0]].tobytes().hex()}\n  nibble  {got[bad[0]].tobytes().hex()}")


# ---------------------------------------------------------------------------
# Data (fixed seeds: a failure replays as is).

def row_scales(rng, rows):
    return np.ldexp(0.5 + 1.5 * rng.random((rows, 1)), rng.integers(-6, 7, (rows, 1)))


def gaussian(rng, rows, cols):
    return (rng.standard_normal((rows, cols)) * row_scales(rng, rows)).astype(np.float32)


def heavy_tailed(rng, rows, cols):
    x = rng.standard_t(3, (rows, cols)) * row_scales(rng, rows)
    x[:, rng.integers(0, cols, 5)] *= 10.0
    return np.clip(x, -65504, 65504).astype(np.float32)


def tie_blocks(rng, scheme, nblocks):
    """Blocks where x * id (Q8_0, Q4_0) or (x - min) * id (Q4_1) is exactly
    k + 0.5: d is a power of two and so is 1/d."""
    out = np.empty((nblocks, 32), np.float32)
    for b in range(nblocks):
        s = np.float32(np.ldexp(1.0, int(rng.integers(-8, 5))))
        if scheme == "q4_1":
            a = int(rng.integers(0, 16))
            k = rng.integers(-a, 15 - a, 32)  # (k + 0.5) s within [lo, hi]
            blk = (k + 0.5) * s
            i, j = rng.choice(32, 2, replace=False)
            blk[i], blk[j] = -a * s, (15 - a) * s
        else:
            q = 127 if scheme == "q8_0" else 8
            k = rng.integers(-q, q, 32)
            blk = (k + 0.5) * s
            blk[rng.integers(0, 32)] = rng.choice([-1.0, 1.0]) * q * s
        out[b] = blk
    return out


def adversarial_blocks(rng, scheme, nblocks):
    """A mix of hostile blocks (F16-representable except the F32 ones)."""
    kinds = []
    for b in range(nblocks):
        kind = b % 9
        a = np.float32(np.ldexp(1.0 + rng.random(), int(rng.integers(-10, 10))))
        if kind == 0:  # +a and -a, random order, one or several of each
            blk = (a * 0.99 * (2 * rng.random(32) - 1)).astype(np.float32)
            for _ in range(int(rng.integers(1, 4))):
                blk[rng.integers(0, 32)] = a
                blk[rng.integers(0, 32)] = -a
        elif kind == 1:  # +-65504 with large and ordinary values
            blk = np.where(rng.random(32) < 0.3, rng.choice([-65504.0, 65504.0], 32),
                           1000.0 * rng.standard_normal(32)).astype(np.float32)
        elif kind == 2:  # constant
            blk = np.full(32, rng.choice([-1.0, 1.0]) * a, np.float32)
        elif kind == 3:  # +0.0 only (see the divergence tests for -0.0)
            blk = np.zeros(32, np.float32)
        elif kind == 4:  # the F16 subnormal grid
            blk = (rng.integers(-1023, 1024, 32) * 2.0 ** -24).astype(np.float32)
        elif kind == 5:  # signed zeros among negative and positive values
            blk = np.where(rng.random(32) < 0.5, np.where(rng.random(32) < 0.5, 0.0, -0.0),
                           a * rng.standard_normal(32)).astype(np.float32)
            blk[rng.integers(0, 32)] = -a  # a negative minimum
        elif kind == 6:  # one outlier
            blk = (a * rng.standard_normal(32)).astype(np.float32)
            blk[rng.integers(0, 32)] = a * 300
        elif kind == 7:  # values just around the rounding boundaries of d = 1
            base = rng.integers(-7, 7, 32).astype(np.float32)
            blk = base + np.float32(0.5) + rng.choice([-1, 0, 1], 32).astype(np.float32) * np.float32(2 ** -20)
            blk[0] = 127.0 if scheme == "q8_0" else 8.0
            if scheme == "q4_1":
                blk[1] = -7.0
        else:  # near-equal magnitudes
            blk = (a * (1 + rng.integers(-2, 3, 32) * 2.0 ** -10)).astype(np.float32)
            blk *= rng.choice([-1.0, 1.0], 32).astype(np.float32)
        kinds.append(np.clip(blk, -65504, 65504).astype(np.float32))
    return np.stack(kinds)


def f32_tiny_blocks(rng, nblocks):
    """F32 subnormals and tiny normals (1/d overflows for most blocks)."""
    e = rng.integers(-149, -119, (nblocks, 32))
    return (np.ldexp(1.0 + rng.random((nblocks, 32)), e) *
            rng.choice([-1.0, 1.0], (nblocks, 32))).astype(np.float32)


def random_f16_bits(rng, rows, cols):
    """Uniformly random finite F16 patterns (subnormals, zeros, 65504)."""
    h = rng.integers(0, 1 << 16, (rows, cols), dtype=np.uint32).astype(np.uint16)
    finite = (h & 0x7C00) != 0x7C00
    h = np.where(finite, h, h ^ 0x4000).astype(np.uint16)
    return h.view(np.float16)


def bf16_bits(x32):
    """float32 -> BF16 bits by nearest even (finite inputs)."""
    u = x32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def datasets(scheme):
    rng = np.random.default_rng(20240611 + list(QTYPES).index(scheme))
    rows, cols = 64, 4096  # 8192 blocks
    yield "gaussian", gaussian(rng, rows, cols)
    yield "heavy-tailed", heavy_tailed(rng, rows, cols)
    yield "ties", tie_blocks(rng, scheme, 4096).reshape(32, 4096)
    yield "adversarial", adversarial_blocks(rng, scheme, 4608).reshape(36, 4096)


def check_roundtrip(tmp_path, scheme, dtype, data, x32, isa="auto", threads=1):
    """Quantize `data` (raw array of dtype) with nibble, compare with gguf-py
    on x32 (the same values as float32), then dequantize both ways."""
    rows, cols = x32.shape
    want = gguf_quantize(scheme, x32)
    got = nibble_quantize(tmp_path, scheme, dtype, data, isa, threads)
    assert_same_blocks(scheme, want, got, f"{scheme} {dtype} isa={isa}")
    deq_gguf = quants.dequantize(got, QTYPES[scheme]).reshape(rows, cols)
    deq_nibble = nibble_dequantize(tmp_path, scheme, got, rows, cols, isa)
    np.testing.assert_array_equal(deq_gguf.view(np.uint32), deq_nibble.view(np.uint32))
    return got.size // BLOCK_BYTES[scheme]


@pytest.mark.parametrize("scheme", list(QTYPES))
def test_f32_matches_gguf_py(tmp_path, scheme):
    blocks = 0
    for name, x in datasets(scheme):
        for isa in ("scalar", "auto"):
            blocks += check_roundtrip(tmp_path, scheme, "f32", x, x, isa)
    assert blocks >= 4 * 2 * 4096
    # F32 subnormals: 1/d is Inf in most blocks; codes 0 on both sides.
    rng = np.random.default_rng(7)
    tiny = f32_tiny_blocks(rng, 2048).reshape(16, 4096)
    check_roundtrip(tmp_path, scheme, "f32", tiny, tiny)
    # Several threads give the same bytes.
    x = next(datasets(scheme))[1]
    check_roundtrip(tmp_path, scheme, "f32", x, x, "auto", 3)


@pytest.mark.parametrize("scheme", list(QTYPES))
def test_f16_matches_gguf_py(tmp_path, scheme):
    for name, x in datasets(scheme):
        h = x.astype(np.float16)
        # gguf-py is handed the F16 array itself (it widens to float32).
        rows, cols = h.shape
        want = gguf_quantize(scheme, h)
        for isa in ("scalar", "auto"):
            got = nibble_quantize(tmp_path, scheme, "f16", h, isa)
            assert_same_blocks(scheme, want, got, f"{scheme} f16 {name} isa={isa}")
    rng = np.random.default_rng(11)
    h = random_f16_bits(rng, 64, 4096)
    check_roundtrip(tmp_path, scheme, "f16", h, h.astype(np.float32))


@pytest.mark.parametrize("scheme", list(QTYPES))
def test_bf16_matches_gguf_py(tmp_path, scheme):
    for name, x in datasets(scheme):
        if scheme == "q4_1":
            x = x * np.float32(0.5)  # BF16(-65504) = -65536: m would be -Inf
        b = bf16_bits(x)
        for isa in ("scalar", "auto"):
            check_roundtrip(tmp_path, scheme, "bf16", b, bf16_to_f32(b), isa)
    # Random BF16 patterns with |x| below 2^11 (subnormals and zeros too).
    rng = np.random.default_rng(13)
    bits = rng.integers(0, 1 << 16, (32, 4096), dtype=np.uint32).astype(np.uint16)
    exp = (bits >> 7) & 0xFF
    bits = np.where(exp > 0x89, bits & 0x807F | (0x89 << 7), bits).astype(np.uint16)
    check_roundtrip(tmp_path, scheme, "bf16", bits, bf16_to_f32(bits))


def first_zero_negative(block):
    for v in block:
        if v == 0:
            return bool(np.signbit(v))
    raise AssertionError("no zero")


def test_known_divergence_q4_0_zero_block(tmp_path):
    """ggml's C keeps max = +0.0 for an all-zero block (d = -0.0, 0x8000);
    gguf-py takes the first element, so -0.0 first gives d = +0.0. Codes agree."""
    x = np.zeros((2, 64), np.float32)
    x[0, 0] = -0.0
    x[1, 32] = -0.0
    got = nibble_quantize(tmp_path, "q4_0", "f32", x).reshape(-1, 18)
    want = gguf_quantize("q4_0", x).reshape(-1, 18)
    for b in range(4):
        assert got[b, :2].tobytes() == b"\x00\x80", b  # ggml: always -0.0
        assert (got[b, 2:] == 0x88).all() and (want[b, 2:] == 0x88).all()
    assert want[0, :2].tobytes() == b"\x00\x00"  # gguf-py: -(-0.0) / 8
    assert want[1, :2].tobytes() == b"\x00\x80"


def test_known_divergence_q4_1_zero_minimum(tmp_path):
    """ggml's C takes the first element of the minimum value (`v < min`), so a
    zero minimum has the first zero's sign; numpy's min picks either zero.
    d and the codes agree; only m's sign bit may differ."""
    rng = np.random.default_rng(17)
    shape = (32, 512)  # 512 blocks: positive values and zeros of both signs
    zeros = np.where(rng.random(shape) < 0.5, 0.0, -0.0)
    x = np.where(rng.random(shape) < 0.7, zeros, 1.0 + rng.random(shape)).astype(np.float32)
    blocks = x.reshape(-1, 32)
    assert (blocks >= 0).all() and all((b == 0).any() for b in blocks)
    got = nibble_quantize(tmp_path, "q4_1", "f32", x).reshape(-1, 20)
    want = gguf_quantize("q4_1", x).reshape(-1, 20)
    np.testing.assert_array_equal(got[:, :2], want[:, :2])   # d
    np.testing.assert_array_equal(got[:, 4:], want[:, 4:])   # codes
    m = got[:, 2:4].copy().view(np.uint16).ravel()
    expected = np.array([0x8000 if first_zero_negative(b) else 0 for b in blocks], np.uint16)
    np.testing.assert_array_equal(m, expected)
    mixed = sum(1 for b in blocks if np.signbit(b[b == 0]).any() and not np.signbit(b[b == 0]).all())
    assert mixed > 100  # the case is really exercised


def test_non_finite_input_is_rejected(tmp_path):
    """gguf-py would write whatever NaN casts to; nibble refuses, naming the element."""
    x = np.ones((4, 64), np.float32)
    x[2, 37] = np.nan
    for scheme in QTYPES:
        r, _ = run_dump(tmp_path, "quantize", scheme, "f32", x, 4, 64)
        assert r.returncode == 2, r.stderr
        assert "row 2, column 37" in r.stderr
