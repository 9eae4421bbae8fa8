"""`nibble convert IN.gguf OUT.gguf --scheme ...` against gguf-py (the `gguf`
package that llama.cpp maintains), on Llama-style models written by
gguf.GGUFWriter: F32, F16 and BF16 weights, a tokenizer vocabulary and other
arrays in the metadata, a non-default general.alignment, an I32 tensor and an
already-Q8_0 tensor (copied through), a weight whose rows are 40 long (no
32-block fits).

What is asserted, for every scheme (q8_0, q4_0, q4_1, f16, bf16, f32):
  - gguf.GGUFReader reads the output; every metadata key of the input is there
    in the same order with the same bytes, except general.file_type (the
    llama ftype of the scheme) and general.quantization_version (2), both u32;
  - tensor names, order and shapes are the input's; each tensor's type is what
    the rules of the issue (written out again below, independently of nibble's
    code) give;
  - quantized tensors are byte for byte gguf.quants.quantize() of the float32
    values (F16/BF16 widened exactly), cast tensors byte for byte numpy's
    rounding, kept tensors the input's bytes;
  - the --report JSON agrees with a numpy computation from gguf-py's
    dequantization of the output (RMSE, max error, SNR, bits per weight,
    bytes), and the CSV has the same rows.
Then defaults (1-D kept, output and tied token_embd to Q8_0 under Q4_x),
overrides (--tensor-type, --keep, a config file with GGUF names), errors
(compressed-tensors names for GGUF output, format mismatches, existing output,
output == input, hostile and truncated files, NaN) and determinism (1 vs 2
threads, --isa scalar vs auto: the same bytes).

Needs the built binary in NIBBLE_BIN (set by tests/python/python_tests.cmake);
skipped without it."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import gguf
from gguf import quants
from gguf.constants import GGMLQuantizationType as QT
from gguf.constants import GGUFValueType as VT

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

SCHEMES = ("q8_0", "q4_0", "q4_1", "f16", "bf16", "f32")
SCHEME_TYPE = {"q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
               "f16": QT.F16, "bf16": QT.BF16, "f32": QT.F32}
# llama.cpp's llama_ftype for each scheme.
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "bf16": 32}
FLOATS = (QT.F32, QT.F16, QT.BF16)
BLOCKS = (QT.Q8_0, QT.Q4_0, QT.Q4_1)
BITS = {QT.Q8_0: 8.5, QT.Q4_0: 4.5, QT.Q4_1: 5.0, QT.F16: 16.0, QT.BF16: 16.0,
        QT.F32: 32.0}
TYPE_NAME = {QT.Q8_0: "q8_0", QT.Q4_0: "q4_0", QT.Q4_1: "q4_1", QT.F16: "f16",
             QT.BF16: "bf16", QT.F32: "f32"}

H, KV, FF, VOCAB, LAYERS = 64, 32, 96, 72, 2


# ---------------------------------------------------------------------------
# Inputs, written by gguf-py.

def _floats(rng, shape, scale=0.05):
    x = rng.standard_normal(shape).astype(np.float32) * scale
    # A few outliers, as real weights have.
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, max(1, flat.size // 500))] *= 12
    return x


def _store(x: np.ndarray, dtype: QT):
    """(array, raw_dtype) for GGUFWriter.add_tensor in `dtype`."""
    if dtype == QT.F32:
        return x.astype(np.float32), None
    if dtype == QT.F16:
        return x.astype(np.float16), None
    if dtype == QT.BF16:
        return quants.quantize(x.astype(np.float32), QT.BF16), QT.BF16
    raise ValueError(dtype)


def make_model(path: Path, dtype: QT = QT.F16, *, tied: bool = False,
               alignment: Optional[int] = 64, seed: int = 1,
               file_type_keys: bool = True, odd: bool = True,
               extras: bool = True, nan_in: Optional[str] = None) -> Path:
    """A 2-layer Llama-style GGUF: 2-D weights in `dtype`, norms F32, an F16
    1-D bias, an odd-width weight, an I32 and a Q8_0 tensor."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("tiny-llama-test")
    if file_type_keys:
        w.add_file_type({QT.F32: 0, QT.F16: 1, QT.BF16: 32}[dtype])
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581tok{i}" for i in range(VOCAB - 3)]
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) / 3 for i in range(VOCAB)])
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_key_value("test.array_u64", [2**64 - 1, 0], VT.ARRAY, sub_type=VT.UINT64)
    w.add_string("test.unicode", "h\u00e9llo \u2603")
    if file_type_keys:
        w.add_quantization_version(2)

    def add(name, x, as_type=dtype):
        if name == nan_in:
            x = x.copy()
            x.reshape(-1)[x.size // 2 + 3] = np.nan
        data, raw = _store(x, as_type)
        w.add_tensor(name, data, raw_dtype=raw)

    add("token_embd.weight", _floats(rng, (VOCAB, H)))
    for i in range(LAYERS):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", 1 + _floats(rng, (H,)), QT.F32)
        add(p + "attn_q.weight", _floats(rng, (H, H)))
        if i == 0:
            add(p + "attn_q.bias", _floats(rng, (H,)), QT.F16)
        add(p + "attn_k.weight", _floats(rng, (KV, H)))
        add(p + "attn_v.weight", _floats(rng, (KV, H)))
        add(p + "attn_output.weight", _floats(rng, (H, H)))
        add(p + "ffn_norm.weight", 1 + _floats(rng, (H,)), QT.F32)
        add(p + "ffn_gate.weight", _floats(rng, (FF, H)))
        add(p + "ffn_up.weight", _floats(rng, (FF, H)))
        add(p + "ffn_down.weight", _floats(rng, (H, FF)))
        if i == 0 and odd:
            add(p + "odd.weight", _floats(rng, (8, 40)))  # ne[0] = 40
        if i == 1 and extras:
            q = quants.quantize(_floats(rng, (16, H)), QT.Q8_0)
            w.add_tensor(p + "extra_q8.weight", q, raw_dtype=QT.Q8_0)
    if extras:
        w.add_tensor("extra.ids", np.arange(7, dtype=np.int32))
    add("output_norm.weight", 1 + _floats(rng, (H,)), QT.F32)
    if not tied:
        add("output.weight", _floats(rng, (VOCAB, H)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------
# The rules of the issue, written out independently of nibble's code.

def expected_type(name: str, ne: List[int], in_type: QT, scheme: str, tied: bool) -> QT:
    if in_type not in FLOATS or len(ne) < 2:
        return in_type  # copied: other types, 1-D tensors
    if not name.endswith("weight") or "_norm.weight" in name:
        return in_type
    t = SCHEME_TYPE[scheme]
    is_output = name == "output.weight" or (tied and name == "token_embd.weight")
    if is_output and t in (QT.Q4_0, QT.Q4_1):
        t = QT.Q8_0
    if t in BLOCKS and ne[0] % 32 != 0:
        return in_type
    return t


# ---------------------------------------------------------------------------
# Helpers.

def run(*args, env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.pop("NIBBLE_ISA", None)
    full.update(env or {})
    return subprocess.run([NIBBLE, *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout)


def convert(src: Path, dst: Path, *args) -> subprocess.CompletedProcess:
    return run("convert", src, dst, "--threads", "2", *args)


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.splitlines()
    errors = [l for l in lines if l.startswith("nibble: error: ")]
    assert len(errors) == 1, r.stderr
    assert lines[-1] == errors[0], r.stderr
    assert all(l.startswith("nibble: warning: ") for l in lines[:-1]), r.stderr
    return errors[0]


def leftovers(d: Path) -> List[str]:
    return sorted(p.name for p in d.iterdir() if ".nibble-tmp" in p.name)


def assert_rejected(r, rc: int, out: Path, *needles, src: Optional[Path] = None,
                    src_sha: Optional[str] = None) -> str:
    assert r.returncode == rc, f"rc {r.returncode}, expected {rc}\n{r.stderr}"
    line = error_line(r)
    for n in needles:
        if isinstance(n, re.Pattern):
            assert n.search(line), f"{n.pattern!r} not in {line}"
        else:
            assert n in line, f"{n!r} not in {line}"
    assert r.stdout == ""
    assert not out.exists(), f"{out} was written"
    assert leftovers(out.parent) == []
    if src is not None:
        assert sha256(src) == src_sha, "the input changed"
    return line


def floats_of(t) -> np.ndarray:
    """The tensor's values as float32 in numpy [rows, ne0] order."""
    ne = [int(x) for x in t.shape]
    x = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    return x.reshape(-1, ne[0])


def raw_field(f) -> bytes:
    return b"".join(p.tobytes() for p in f.parts)


def expected_bytes(t, out_type: QT) -> bytes:
    if out_type == t.tensor_type:
        return t.data.tobytes()
    return quants.quantize(floats_of(t), out_type).tobytes()


def check_conversion(src: Path, dst: Path, scheme: str, report: dict, tied: bool,
                     types: Optional[Dict[str, QT]] = None) -> Dict[str, QT]:
    """Asserts everything the module docstring lists about one output;
    returns {tensor: output type}. `types` overrides expected_type."""
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(dst))
    # Metadata: the same keys in the same order, byte for byte, except the two.
    in_keys = [k for k in a.fields if not k.startswith("GGUF.")]
    out_keys = [k for k in b.fields if not k.startswith("GGUF.")]
    special = ("general.file_type", "general.quantization_version")
    assert [k for k in out_keys if k not in special] == [k for k in in_keys if k not in special]
    for k in in_keys:
        if k in special:
            continue
        assert raw_field(b.fields[k]) == raw_field(a.fields[k]), k
    for k in special:
        assert b.fields[k].types == [VT.UINT32], k
        if k in a.fields:
            assert out_keys.index(k) == in_keys.index(k), k  # replaced in place
    assert b.fields["general.file_type"].contents() == FILE_TYPE[scheme]
    assert b.fields["general.quantization_version"].contents() == 2
    assert b.alignment == a.alignment
    if "general.alignment" in a.fields:
        assert b.alignment == a.fields["general.alignment"].contents()
    assert (b.fields["tokenizer.ggml.tokens"].contents()
            == a.fields["tokenizer.ggml.tokens"].contents())

    # Tensors.
    assert [t.name for t in b.tensors] == [t.name for t in a.tensors]
    rows = report["tensors"]
    assert [r["name"] for r in rows] == [t.name for t in a.tensors]
    got_types = {}
    for s, o, row in zip(a.tensors, b.tensors, rows):
        ne = [int(x) for x in s.shape]
        assert [int(x) for x in o.shape] == ne, s.name
        want = (types or {}).get(s.name) or expected_type(s.name, ne, s.tensor_type, scheme, tied)
        assert o.tensor_type == want, (s.name, o.tensor_type.name, want.name)
        got_types[s.name] = want
        assert o.data.tobytes() == expected_bytes(s, want), s.name
        assert o.data_offset % b.alignment == 0
        # The report row, from numpy.
        params = int(np.prod(ne))
        assert row["shape"] == ne and row["params"] == params, s.name
        assert row["bytes_in"] == int(s.n_bytes) and row["bytes_out"] == int(o.n_bytes), s.name
        assert math.isclose(row["bits_per_weight"], 8 * int(o.n_bytes) / params), s.name
        if want == s.tensor_type:
            assert row["scheme"] == "keep", s.name
            assert row["rmse"] == 0 and row["max_abs_error"] == 0 and row["snr_db"] is None
            continue
        assert row["scheme"] == TYPE_NAME[want], s.name
        assert row["bits_per_weight"] == BITS[want], s.name
        x = floats_of(s).astype(np.float64)
        y = floats_of(o).astype(np.float64)
        e = y - x
        rmse = math.sqrt(float(np.mean(e * e)))
        assert math.isclose(row["rmse"], rmse, rel_tol=1e-5, abs_tol=1e-12), s.name
        assert row["max_abs_error"] == pytest.approx(float(np.abs(e).max()), rel=1e-6, abs=1e-12)
        if want in BLOCKS:
            assert rmse > 0, s.name
            snr = 10 * math.log10(float((x * x).sum()) / float((e * e).sum()))
            assert row["snr_db"] == pytest.approx(snr, abs=1e-3), s.name
    totals = report["totals"]
    assert totals["tensors"] == len(rows)
    assert totals["bytes_in"] == sum(int(t.n_bytes) for t in a.tensors)
    assert totals["bytes_out"] == sum(int(t.n_bytes) for t in b.tensors)
    assert totals["quantized"] == sum(1 for r in rows if r["scheme"] in ("q8_0", "q4_0", "q4_1"))
    quantized = [r for r in rows if r["scheme"] in ("q8_0", "q4_0", "q4_1")]
    if quantized:
        mean = sum(r["params"] * r["snr_db"] for r in quantized) / sum(r["params"] for r in quantized)
        assert totals["mean_snr_db"] == pytest.approx(mean, abs=1e-6)
        worst = min(quantized, key=lambda r: r["snr_db"])
        assert totals["worst"] == worst["name"]
    return got_types


def convert_checked(tmp_path: Path, src: Path, scheme: str, *args, name="out") -> tuple:
    dst = tmp_path / f"{name}.gguf"
    rep, csv_path = tmp_path / f"{name}.json", tmp_path / f"{name}.csv"
    r = convert(src, dst, "--scheme", scheme, "--report", rep, "--csv", csv_path, *args)
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    with open(csv_path, newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [c["name"] for c in csv_rows] == [t["name"] for t in report["tensors"]]
    assert [c["scheme"] for c in csv_rows] == [t["scheme"] for t in report["tensors"]]
    return dst, report, r


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf-in")
    return {
        "f16": make_model(d / "f16.gguf", QT.F16, seed=1),
        "f32": make_model(d / "f32.gguf", QT.F32, seed=2, alignment=None),
        "bf16": make_model(d / "bf16.gguf", QT.BF16, seed=3, alignment=128,
                           file_type_keys=False),
        "tied": make_model(d / "tied.gguf", QT.F16, seed=4, tied=True),
    }


# ---------------------------------------------------------------------------
# Every scheme on every input dtype.

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", ["f16", "f32", "bf16"])
def test_scheme_matches_gguf_py(tmp_path, models, scheme, dtype):
    src = models[dtype]
    before = sha256(src)
    dst, report, r = convert_checked(tmp_path, src, scheme)
    assert sha256(src) == before
    types = check_conversion(src, dst, scheme, report, tied=False)
    # The defaults, spelled out.
    in_type = {"f16": QT.F16, "f32": QT.F32, "bf16": QT.BF16}[dtype]
    assert types["blk.0.attn_norm.weight"] == QT.F32          # 1-D F32 kept
    assert types["blk.0.attn_q.bias"] == QT.F16               # 1-D F16 kept, even for f32
    assert types["blk.0.odd.weight"] == (in_type if SCHEME_TYPE[scheme] in BLOCKS
                                         else SCHEME_TYPE[scheme])
    assert types["blk.1.extra_q8.weight"] == QT.Q8_0 and types["extra.ids"] == QT.I32
    assert types["token_embd.weight"] == SCHEME_TYPE[scheme]  # untied: the scheme
    assert types["output.weight"] == (QT.Q8_0 if scheme in ("q4_0", "q4_1")
                                      else SCHEME_TYPE[scheme])
    if SCHEME_TYPE[scheme] in BLOCKS:
        assert "blk.0.odd.weight" in r.stderr and "multiple of 32" in r.stderr
    # The table on stdout names the worst tensors.
    assert "total: " in r.stdout


def test_tied_embeddings_get_q8_0_under_q4(tmp_path, models):
    src = models["tied"]
    for scheme in ("q4_0", "q4_1", "q8_0", "f16"):
        dst, report, _ = convert_checked(tmp_path, src, scheme, name=scheme)
        types = check_conversion(src, dst, scheme, report, tied=True)
        assert types["token_embd.weight"] == (QT.Q8_0 if scheme != "f16" else QT.F16)


def test_metadata_keys_added_at_the_end_when_missing(tmp_path, models):
    src = models["bf16"]  # written without file_type / quantization_version
    assert "general.file_type" not in gguf.GGUFReader(str(src)).fields
    dst, report, _ = convert_checked(tmp_path, src, "q4_0")
    keys = [k for k in gguf.GGUFReader(str(dst)).fields if not k.startswith("GGUF.")]
    # llama-quantize's order: quantization_version, then file_type.
    assert keys[-2:] == ["general.quantization_version", "general.file_type"]


def test_keep_scheme_copies_the_file(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "same.gguf"
    r = convert(src, dst, "--scheme", "keep")
    assert r.returncode == 0, r.stderr
    # Same metadata and tensors, same layout: the same bytes.
    assert dst.read_bytes() == src.read_bytes()


def test_version_2_input_is_written_as_version_3(tmp_path, models):
    # v2 and v3 share the layout: a v3 file with its version field set to 2
    # is a valid v2 file (gguf-py reads both).
    raw = models["f16"].read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] == 3
    src = tmp_path / "v2.gguf"
    src.write_bytes(raw[:4] + struct.pack("<I", 2) + raw[8:])
    dst = tmp_path / "v3.gguf"
    r = convert(src, dst, "--scheme", "keep")
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == raw
    dst2, report, _ = convert_checked(tmp_path, src, "q4_0", name="v2q")
    check_conversion(src, dst2, "q4_0", report, tied=False)


def test_generator_script_output_converts(tmp_path):
    """scripts/make_gguf_checkpoint.py (the benchmark's model) writes files
    that gguf-py reads, and nibble converts them like any other."""
    import sys
    from conftest import ROOT
    for dtype, qt in (("f16", QT.F16), ("bf16", QT.BF16), ("f32", QT.F32)):
        src = tmp_path / f"gen-{dtype}.gguf"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_gguf_checkpoint.py"), str(src),
                        "--hidden", "128", "--intermediate", "320", "--vocab", "100",
                        "--heads", "4", "--kv-heads", "2", "--layers", "1",
                        "--min-size", "500KB", "--dtype", dtype],
                       check=True, stdout=subprocess.DEVNULL)
        reader = gguf.GGUFReader(str(src))
        assert reader.fields["general.architecture"].contents() == "llama"
        assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 100
        assert sum(int(t.n_bytes) for t in reader.tensors) >= 500_000
        assert reader.tensors[0].name == "token_embd.weight"
        assert reader.tensors[0].tensor_type == qt
        assert [int(x) for x in reader.tensors[0].shape] == [128, 100]
        dst, report, _ = convert_checked(tmp_path, src, "q4_0", name=f"gen-{dtype}-q")
        check_conversion(src, dst, "q4_0", report, tied=False)


# ---------------------------------------------------------------------------
# Overrides.

def test_tensor_type_and_keep_overrides(tmp_path, models):
    src = models["f16"]
    dst, report, r = convert_checked(
        tmp_path, src, "q4_0",
        "--keep", "blk.1.attn_*",
        "--tensor-type", "blk.*.ffn_down.weight=q8_0",
        "--tensor-type", "output.weight=f16",
        "--tensor-type", "token_embd.weight=Q4_1",  # llama.cpp's spelling
        "--tensor-type", "output_norm.weight=f16",  # a cast applies to 1-D
        "--tensor-type", "blk.0.attn_norm=q8_0")    # a quantizing rule does not
    want = {"blk.0.ffn_down.weight": QT.Q8_0, "blk.1.ffn_down.weight": QT.Q8_0,
            "output.weight": QT.F16, "token_embd.weight": QT.Q4_1,
            "output_norm.weight": QT.F16, "blk.0.attn_norm.weight": QT.F32}
    for n in ("q", "k", "v", "output"):
        want[f"blk.1.attn_{n}.weight"] = QT.F16
    want["blk.1.attn_norm.weight"] = QT.F32
    types = check_conversion(src, dst, "q4_0", report, tied=False, types=want)
    assert types["blk.0.attn_q.weight"] == QT.Q4_0
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["output_norm.weight"]["scheme"] == "f16"


def test_config_file_with_gguf_names(tmp_path, models):
    src = models["f16"]
    cfg = tmp_path / "rules.toml"
    cfg.write_text('default = "q4_1"\n'
                   '[[rule]]\nmatch = "token_embd.weight"\nscheme = "q4_0"\n'
                   '[[rule]]\nmatch = ["blk.0.*", "re:^output\\\\."]\nscheme = "q8_0"\n'
                   '[[rule]]\nmatch = "blk.1.ffn_up.weight"\nscheme = "bf16"\n')
    dst = tmp_path / "cfg.gguf"
    rep = tmp_path / "cfg.json"
    r = convert(src, dst, "--config", cfg, "--report", rep)
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    want = {"token_embd.weight": QT.Q4_0, "output.weight": QT.Q8_0,
            "blk.1.ffn_up.weight": QT.BF16}
    for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        want[f"blk.0.{n}.weight"] = QT.Q8_0
    # The config's default is the scheme: file type Q4_1; the odd weight is
    # still kept (q8_0 does not fit 40 columns either).
    types = check_conversion(src, dst, "q4_1", report, tied=False, types=want)
    assert types["blk.1.attn_q.weight"] == QT.Q4_1
    assert types["blk.0.odd.weight"] == QT.F16


def test_built_in_default_is_q8_0(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "d.gguf"
    rep = tmp_path / "d.json"
    r = convert(src, dst, "--report", rep)
    assert r.returncode == 0, r.stderr
    check_conversion(src, dst, "q8_0", json.loads(rep.read_text()), tied=False)


# ---------------------------------------------------------------------------
# --dry-run, --strict, threads and ISA.

def test_dry_run_writes_nothing(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "dry.gguf"
    r = convert(src, dst, "--scheme", "q4_0", "--dry-run", "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert not dst.exists() and not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["tensor", "shape", "dtype", "target", "bytes"]
    reader = gguf.GGUFReader(str(src))
    by_name = {l.split()[0]: l for l in lines[1:] if l and not l.startswith(("warning", "total", "metadata"))}
    assert list(by_name) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        ne = [int(x) for x in t.shape]
        want = expected_type(t.name, ne, t.tensor_type, "q4_0", False)
        line = by_name[t.name]
        # Shapes in ne order, as gguf-py prints them; bytes before -> after.
        assert "[" + ", ".join(map(str, ne)) + "]" in line, line
        assert t.tensor_type.name in line.split()
        label = "keep" if want == t.tensor_type else TYPE_NAME[want]
        assert line.split()[ne.__len__() + 2] == label, line
        after = len(expected_bytes(t, want))
        assert f"{int(t.n_bytes)} -> {after}" in line, line
    assert "general.file_type = 2" in r.stdout


def test_strict_turns_the_odd_width_warning_into_an_error(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "s.gguf"
    r = convert(src, dst, "--scheme", "q4_0", "--strict")
    assert_rejected(r, 1, dst, "blk.0.odd.weight", "multiple of 32", "[strict]")


def test_unused_rule_warns(tmp_path, models):
    src = models["f16"]
    r = convert(src, tmp_path / "u.gguf", "--scheme", "q8_0", "--tensor-type", "nothing.*=q4_0")
    assert r.returncode == 0, r.stderr
    assert "matches no tensor" in r.stderr


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0", "q4_1", "bf16"])
def test_same_bytes_for_any_thread_count_and_isa(tmp_path, models, scheme):
    src = models["f32"]
    outs = []
    for i, args in enumerate([("--threads", "1", "--isa", "scalar"),
                              ("--threads", "2", "--isa", "scalar"),
                              ("--threads", "1", "--isa", "auto"),
                              ("--threads", "2", "--isa", "auto")]):
        dst = tmp_path / f"o{i}.gguf"
        rep = tmp_path / f"o{i}.json"
        r = run("convert", src, dst, "--scheme", scheme, "--report", rep, *args)
        assert r.returncode == 0, r.stderr
        report = json.loads(rep.read_text())
        report.pop("output")
        outs.append((dst.read_bytes(), report))
    for b, rep in outs[1:]:
        assert b == outs[0][0]
        assert rep == outs[0][1]  # the metrics too, bit for bit


# ---------------------------------------------------------------------------
# Errors: nothing written, the input unchanged, one line.

@pytest.mark.parametrize("args, needles", [
    (["--scheme", "int4"], ["'int4'", "compressed-tensors", "q4_0"]),
    (["--scheme", "int8"], ["'int8'", "q8_0"]),
    (["--scheme", "q4_k"], ["unknown GGUF type 'q4_k'", "q4_1"]),
    (["--tensor-type", "output.weight=int4-g128"],
     ["--tensor-type 'output.weight=int4-g128'", "compressed-tensors", "q8_0"]),
    (["--group-size", "64"], ["--group-size", "GGUF"]),
])
def test_compressed_tensors_names_refused_for_gguf(tmp_path, models, args, needles):
    src = models["f16"]
    dst = tmp_path / "x.gguf"
    assert_rejected(convert(src, dst, *args), 1, dst, *needles, src=src, src_sha=sha256(src))


def test_config_with_compressed_tensors_name_names_the_line(tmp_path, models):
    src = models["f16"]
    cfg = tmp_path / "bad.toml"
    cfg.write_text('default = "q4_0"\n\n[[rule]]\nmatch = "output.weight"\nscheme = "int4-g32"\n')
    dst = tmp_path / "x.gguf"
    assert_rejected(convert(src, dst, "--config", cfg), 2, dst,
                    f"{cfg}:5:", "'int4-g32'", "compressed-tensors", "q4_0")
    cfg.write_text('default = "int8"\n')
    assert_rejected(convert(src, dst, "--config", cfg), 2, dst, f"{cfg}:1:", "'int8'")


def test_safetensors_names_still_refuse_gguf_types(tmp_path):
    # The other direction is unchanged: GGUF types for safetensors output.
    st = tmp_path / "m.safetensors"
    hdr = json.dumps({"a.weight": {"dtype": "F32", "shape": [2, 32],
                                   "data_offsets": [0, 256]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    st.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(256))
    out = tmp_path / "out"
    assert_rejected(convert(st, out, "--scheme", "q4_0"), 1, out, "GGUF block type")


def test_format_mismatch_is_a_usage_error(tmp_path, models):
    src = models["f16"]
    out_dir = tmp_path / "outdir"
    assert_rejected(convert(src, out_dir, "--scheme", "q4_0"), 1, out_dir,
                    f"{src}: ", "GGUF", ".gguf")
    st = tmp_path / "m.safetensors"
    hdr = json.dumps({"a.weight": {"dtype": "F32", "shape": [2, 32],
                                   "data_offsets": [0, 256]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    st.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(256))
    dst = tmp_path / "m.gguf"
    assert_rejected(convert(st, dst, "--scheme", "q4_0"), 1, dst, str(st), "not a GGUF file")
    # A GGUF file is found by its magic, whatever its name.
    renamed = tmp_path / "model.bin"
    shutil.copy(src, renamed)
    r = convert(renamed, tmp_path / "ok.gguf", "--scheme", "q8_0")
    assert r.returncode == 0, r.stderr


def test_missing_output_directory_is_an_io_error(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "no-such-dir" / "o.gguf"
    r = convert(src, dst, "--scheme", "q4_0")
    assert r.returncode == 3, r.stderr
    assert str(dst) in error_line(r)
    assert not (tmp_path / "no-such-dir").exists()


def test_existing_output_needs_force(tmp_path, models):
    src = models["f16"]
    dst = tmp_path / "o.gguf"
    dst.write_bytes(b"precious")
    r = convert(src, dst, "--scheme", "q4_0")
    assert r.returncode == 1, r.stderr
    assert "exists" in error_line(r) and "--force" in error_line(r)
    assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []
    r = convert(src, dst, "--scheme", "q4_0", "--force")
    assert r.returncode == 0, r.stderr
    assert gguf.GGUFReader(str(dst)).fields["general.file_type"].contents() == 2


def test_output_equal_to_input_is_refused(tmp_path, models):
    src = tmp_path / "m.gguf"
    shutil.copy(models["f16"], src)
    before = sha256(src)
    for out in (src, tmp_path / "." / "m.gguf"):
        r = convert(src, out, "--scheme", "q4_0", "--force")
        assert r.returncode == 1, r.stderr
        assert "is the input" in error_line(r)
    link = tmp_path / "link.gguf"
    link.symlink_to(src)
    hard = tmp_path / "hard.gguf"
    os.link(src, hard)
    for out in (link, hard):
        r = convert(src, out, "--scheme", "q4_0", "--force")
        assert r.returncode == 1, r.stderr
        assert "is the input" in error_line(r)
    assert sha256(src) == before
    assert leftovers(tmp_path) == []


def _truncated(src: Path, dst: Path, cut: int) -> Path:
    dst.write_bytes(src.read_bytes()[:cut])
    return dst


@pytest.mark.parametrize("case", ["truncated-data", "truncated-header", "bad-magic",
                                  "version-1", "huge-count", "empty"])
def test_hostile_gguf_rejected(tmp_path, models, case):
    raw = models["f16"].read_bytes()
    src = tmp_path / "bad.gguf"
    if case == "truncated-data":
        src.write_bytes(raw[: len(raw) - 3000])
    elif case == "truncated-header":
        src.write_bytes(raw[:700])
    elif case == "bad-magic":
        src.write_bytes(b"GGUG" + raw[4:])
    elif case == "version-1":
        src.write_bytes(raw[:4] + struct.pack("<I", 1) + raw[8:])
    elif case == "huge-count":
        src.write_bytes(raw[:8] + struct.pack("<Q", 1 << 62) + raw[16:])
    else:
        src.write_bytes(b"")
    before = sha256(src)
    dst = tmp_path / "out.gguf"
    r = convert(src, dst, "--scheme", "q4_0")
    line = assert_rejected(r, 2, dst, str(src), src=src, src_sha=before)
    if case != "empty":
        assert re.search(r"(byte|offset) \d+", line), line


def test_nan_in_a_weight_is_an_error_naming_row_and_column(tmp_path):
    src = make_model(tmp_path / "nan.gguf", QT.F16, nan_in="blk.1.ffn_up.weight")
    dst = tmp_path / "out.gguf"
    r = convert(src, dst, "--scheme", "q4_0")
    assert_rejected(r, 2, dst, "blk.1.ffn_up.weight", re.compile(r"row \d+"),
                    re.compile(r"byte \d+"), src=src, src_sha=sha256(src))


# ---------------------------------------------------------------------------
# Interruption: SIGINT / SIGTERM while the output is written leave nothing.

def write_big_f16_gguf(path: Path, n: int = 8, rows: int = 4096, cols: int = 4096) -> None:
    """n F16 [rows, cols] weights, written tensor by tensor in the GGUF v3
    layout (gguf-py would hold them all in memory first)."""
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    kvs = s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama")
    infos = b""
    nbytes = rows * cols * 2
    for i in range(n):
        infos += s(f"blk.{i}.ffn_up.weight".encode()) + struct.pack("<I", 2)
        infos += struct.pack("<QQIQ", cols, rows, 1, i * nbytes)
    head = b"GGUF" + struct.pack("<IQQ", 3, n, 1) + kvs + infos
    head += bytes(-len(head) % 32)
    pool = (np.random.default_rng(7).standard_t(4, 1 << 20) * 0.02).astype(np.float16)
    block = np.resize(pool, rows * cols)
    with open(path, "wb") as f:
        f.write(head)
        for i in range(n):
            np.roll(block, 4099 * i).tofile(f)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("big") / "big.gguf"
    write_big_f16_gguf(p)
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, "double"])
def test_signal_leaves_nothing(tmp_path, big, sig):
    before = sha256(big)
    dst = tmp_path / "out.gguf"
    env = dict(os.environ)
    env.pop("NIBBLE_ISA", None)
    p = subprocess.Popen([NIBBLE, "convert", str(big), str(dst), "--scheme", "q4_0",
                          "--isa", "scalar", "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "the conversion ended before it could be signalled"
    assert leftovers(tmp_path), "no temporary appeared"
    if sig == "double":
        # The second signal takes the handler's own path: it removes the
        # temporary itself and exits at once, printing nothing.
        p.send_signal(signal.SIGINT)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGINT, err
    else:
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 128 + sig, err
        assert "interrupted" in err
    assert not dst.exists()
    assert leftovers(tmp_path) == []
    assert sha256(big) == before


def test_big_file_converts_and_matches_gguf_py(tmp_path, big):
    """The same file converted completely: every block equals gguf-py's."""
    dst = tmp_path / "big-q8.gguf"
    r = run("convert", big, dst, "--scheme", "q8_0", "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = gguf.GGUFReader(str(big)), gguf.GGUFReader(str(dst))
    for s, o in zip(a.tensors, b.tensors):
        assert o.tensor_type == QT.Q8_0
        assert o.data.tobytes() == quants.quantize(floats_of(s), QT.Q8_0).tobytes(), s.name
