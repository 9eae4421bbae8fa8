"""nibble's GGUF reader and writer against gguf-py (gguf, pinned in
scripts/requirements.txt), the reference reader/writer of llama.cpp.

Files written by gguf.GGUFWriter (every metadata type, tokenizer-like string
arrays, F32/F16/BF16/I32/Q8_0 tensors, default and custom alignments) must be
seen by nibble's reader exactly as gguf.GGUFReader sees them; files copied
through nibble's writer must be byte-identical to their input and read back
by gguf.GGUFReader with the same metadata and tensor bytes.

nibble's side is the helper tests/io/gguf_dump.cc (target nibble_gguf_dump):
its path comes from NIBBLE_GGUF_DUMP, else the newest build*/tests/
nibble_gguf_dump under the repository; the tests are skipped when neither
exists.
"""
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf.constants import GGML_QUANT_SIZES
from gguf.constants import GGMLQuantizationType as QT
from gguf.constants import GGUFValueType as VT

ROOT = Path(__file__).resolve().parents[2]


def _find_dump() -> str:
    env = os.environ.get("NIBBLE_GGUF_DUMP", "")
    if env:
        return env  # a wrong path fails loudly below, it is not skipped
    found = sorted(ROOT.glob("build*/tests/nibble_gguf_dump"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return str(found[0]) if found else ""


DUMP = _find_dump()
pytestmark = pytest.mark.skipif(
    not DUMP, reason="nibble_gguf_dump is not built (set NIBBLE_GGUF_DUMP)")


def run_dump(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([DUMP, *args], capture_output=True, text=True,
                       timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def nibble_view(path: Path) -> dict:
    return json.loads(run_dump(str(path)).stdout)


# --- what gguf.GGUFReader sees, in the dump's encoding ----------------------

_FLOAT_BITS = {VT.FLOAT32: np.uint32, VT.FLOAT64: np.uint64}


def _element(part: np.ndarray, vtype: VT):
    if vtype == VT.STRING:
        return bytes(part).hex()
    if vtype == VT.BOOL:
        return bool(part[0])
    if vtype in _FLOAT_BITS:
        return int(part.view(_FLOAT_BITS[vtype])[0])
    return int(part[0])


def reference_view(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    fields = list(r.fields.values())
    # The first three fields are the header (version, tensor and kv counts).
    assert [f.name for f in fields[:3]] == [
        "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"]
    kvs = []
    for f in fields[3:]:
        vtype = VT(int(f.parts[2][0]))
        raw = b"".join(p.tobytes() for p in f.parts[3:])
        if vtype == VT.ARRAY:
            etype = VT(int(f.parts[3][0]))
            count = int(f.parts[4][0])
            value = [_element(f.parts[i], etype) for i in f.data]
        else:
            etype, count = vtype, 1
            value = _element(f.parts[f.data[0]], vtype)
        kvs.append({
            "key": bytes(f.parts[1]).hex(),
            "type": vtype,
            "element_type": etype,
            "count": count,
            "offset": int(f.offset),
            "raw": raw.hex(),
            "value": value,
        })
    tensors = []
    for t in r.tensors:
        tensors.append({
            "name": t.name.encode().hex(),
            "type": int(t.tensor_type),
            "ne": [int(x) for x in t.shape],
            "n_elements": int(t.n_elements),
            "byte_size": int(t.n_bytes),
            "offset": int(t.data_offset) - int(r.data_offset),
            "data_offset": int(t.data_offset),
            "data": t.data.tobytes().hex(),
        })
    return {
        "version": int(fields[0].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "file_size": path.stat().st_size,
        "kvs": kvs,
        "tensors": tensors,
    }


_TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16",
    VT.UINT32: "u32", VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool",
    VT.STRING: "string", VT.ARRAY: "array", VT.UINT64: "u64",
    VT.INT64: "i64", VT.FLOAT64: "f64",
}


def assert_same_view(nibble: dict, ref: dict) -> None:
    for k in ("version", "alignment", "data_offset", "file_size"):
        assert nibble[k] == ref[k], k
    assert len(nibble["kvs"]) == len(ref["kvs"])
    for n, e in zip(nibble["kvs"], ref["kvs"]):
        key = bytes.fromhex(e["key"]).decode()
        assert n["key"] == e["key"], key
        assert n["type"] == _TYPE_NAMES[e["type"]], key
        assert n["element_type"] == _TYPE_NAMES[e["element_type"]], key
        assert n["count"] == e["count"], key
        assert n["offset"] == e["offset"], key
        assert n["raw"] == e["raw"], key
        assert n["value"] == e["value"], key
    assert len(nibble["tensors"]) == len(ref["tensors"])
    for n, e in zip(nibble["tensors"], ref["tensors"]):
        for k in ("name", "type", "ne", "n_elements", "byte_size", "offset",
                  "data_offset", "data"):
            assert n[k] == e[k], (bytes.fromhex(e["name"]).decode(), k)


# --- files written by gguf-py -----------------------------------------------


def tokenizer(n: int, width: int = 37) -> list[str]:
    special = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581the", "", "日本語",
               "emoji 😀", "tab\there", "quote\"'\\"]
    return special + [f"\u2581tok{i}_{'x' * (i % width)}" for i in range(n)]


def write_with_gguf_py(path: Path, alignment: int | None, seed: int,
                       n_tokens: int = 200, token_width: int = 37,
                       with_tensors: bool = True) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("tiny-test")
    w.add_file_type(1)
    w.add_quantization_version(2)
    w.add_context_length(4096)
    w.add_uint8("test.u8", 255)
    w.add_int8("test.i8", -128)
    w.add_uint16("test.u16", 65535)
    w.add_int16("test.i16", -32768)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -(2**31))
    w.add_float32("test.f32", 1.0 / 3.0)
    w.add_float32("test.f32_inf", math.inf)
    w.add_uint64("test.u64", 2**64 - 1)
    w.add_int64("test.i64", -(2**63))
    w.add_float64("test.f64", math.pi)
    w.add_bool("test.true", True)
    w.add_bool("test.false", False)
    w.add_string("test.unicode", "héllo ☃ \u2581")
    tokens = tokenizer(n_tokens, token_width)
    w.add_token_list(tokens)
    w.add_token_scores([float(-i) / 7 for i in range(len(tokens))])
    w.add_token_types([(i % 6) + 1 for i in range(len(tokens))])
    w.add_token_merges([f"a{i} b{i}" for i in range(50)])
    for vt, vals in [(VT.UINT8, [0, 7, 255]), (VT.INT8, [-128, 127]),
                     (VT.UINT16, [65535, 1]), (VT.INT16, [-1, 300]),
                     (VT.UINT32, [4_000_000_000]), (VT.UINT64, [2**64 - 1, 0]),
                     (VT.INT64, [-(2**63), 2**63 - 1]),
                     (VT.FLOAT64, [0.1, -1e300]), (VT.BOOL, [True, False])]:
        w.add_key_value(f"test.array_{vt.name.lower()}", vals, VT.ARRAY,
                        sub_type=vt)
    if with_tensors:
        f32 = rng.standard_normal((8, 64)).astype(np.float32)
        w.add_tensor("token_embd.weight", f32.astype(np.float16))
        w.add_tensor("output_norm.weight",
                     rng.standard_normal(64).astype(np.float32))  # 1-D
        q = gguf.quants.quantize(
            rng.standard_normal((16, 64)).astype(np.float32), QT.Q8_0)
        w.add_tensor("blk.0.attn_q.weight", q, raw_dtype=QT.Q8_0)
        bf16 = (rng.standard_normal((4, 3, 64)).astype(np.float32)
                .view(np.uint32) >> 16).astype(np.uint16)
        w.add_tensor("blk.0.ffn_up.weight", bf16, raw_dtype=QT.BF16)
        w.add_tensor("blk.0.ids", np.arange(7, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("alignment", [None, 8, 64, 256])
def test_nibble_reads_gguf_py_files_as_gguf_py_does(tmp_path, alignment):
    path = tmp_path / "m.gguf"
    write_with_gguf_py(path, alignment, seed=1 + (alignment or 0))
    ref = reference_view(path)
    assert ref["alignment"] == (alignment or 32)
    assert {t["type"] for t in ref["tensors"]} == {
        QT.F16, QT.F32, QT.Q8_0, QT.BF16, QT.I32}
    assert_same_view(nibble_view(path), ref)


def test_large_tokenizer_crosses_read_buffers(tmp_path):
    # About 1.6 MiB of strings: the reader's pread window is 1 MiB.
    path = tmp_path / "tok.gguf"
    write_with_gguf_py(path, None, seed=5, n_tokens=8000, token_width=400)
    assert path.stat().st_size > 1_500_000
    assert_same_view(nibble_view(path), reference_view(path))


def test_metadata_only_file(tmp_path):
    path = tmp_path / "meta.gguf"
    write_with_gguf_py(path, 64, seed=3, with_tensors=False)
    view = nibble_view(path)
    assert view["tensors"] == []
    assert_same_view(view, reference_view(path))


@pytest.mark.parametrize("alignment", [None, 64])
def test_copy_through_nibble_writer_is_byte_identical(tmp_path, alignment):
    src = tmp_path / "in.gguf"
    dst = tmp_path / "out.gguf"
    write_with_gguf_py(src, alignment, seed=11)
    run_dump("--rewrite", str(src), str(dst))
    assert dst.read_bytes() == src.read_bytes()
    # And gguf-py reads nibble's file with the same metadata and tensors.
    ref_in, ref_out = reference_view(src), reference_view(dst)
    assert ref_out == ref_in


def test_set_u32_replaces_in_place_and_appends(tmp_path):
    src = tmp_path / "in.gguf"
    dst = tmp_path / "out.gguf"
    write_with_gguf_py(src, None, seed=13)
    run_dump("--rewrite", str(src), str(dst),
             "--set-u32", "general.file_type=7",
             "--set-u32", "general.quantization_version=2",
             "--set-u32", "nibble.test_key=123")
    r_in, r_out = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    keys_in = list(r_in.fields)
    keys_out = list(r_out.fields)
    # Same order; the new key last.
    assert keys_out == keys_in + ["nibble.test_key"]
    for k in keys_in:
        if k.startswith("GGUF.") or k == "general.file_type":
            continue
        a, b = r_in.fields[k], r_out.fields[k]
        assert b.types == a.types, k
        assert b"".join(p.tobytes() for p in b.parts[3:]) == \
            b"".join(p.tobytes() for p in a.parts[3:]), k
    ft = r_out.fields["general.file_type"]
    assert ft.types == [VT.UINT32] and ft.contents() == 7
    assert r_out.fields["general.quantization_version"].contents() == 2
    assert r_out.fields["nibble.test_key"].types == [VT.UINT32]
    assert r_out.fields["nibble.test_key"].contents() == 123
    assert len(r_out.tensors) == len(r_in.tensors)
    for a, b in zip(r_in.tensors, r_out.tensors):
        assert (a.name, a.tensor_type, list(a.shape)) == \
            (b.name, b.tensor_type, list(b.shape))
        assert a.data.tobytes() == b.data.tobytes()


def test_write_version_2(tmp_path):
    src = tmp_path / "in.gguf"
    dst = tmp_path / "out.gguf"
    write_with_gguf_py(src, None, seed=17)
    run_dump("--rewrite", str(src), str(dst), "--version", "2")
    ref_in, ref_out = reference_view(src), reference_view(dst)
    assert ref_out["version"] == 2
    ref_out["version"] = 3
    assert ref_out == ref_in
    assert_same_view(nibble_view(dst), reference_view(dst))


def test_type_table_matches_gguf_py():
    table = json.loads(run_dump("--types").stdout)
    ours = {row[0]: tuple(row[1:]) for row in table}
    theirs = {int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in QT}
    assert set(ours) == set(theirs)
    for tid, row in theirs.items():
        if tid == QT.Q8_1:
            # gguf-py still lists two f32 scales (40 bytes); ggml's
            # block_q8_1 holds two halves: 36 bytes (nibble follows ggml).
            assert row == ("Q8_1", 32, 40)
            assert ours[tid] == ("Q8_1", 32, 36)
            continue
        assert ours[tid] == row, row[0]


def test_truncated_or_padded_gguf_py_file_is_refused(tmp_path):
    path = tmp_path / "m.gguf"
    write_with_gguf_py(path, None, seed=19)
    data = path.read_bytes()
    ref = reference_view(path)
    last = ref["tensors"][-1]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: last["data_offset"] + last["byte_size"] - 1])
    r = run_dump(str(cut), ok=False)
    assert r.returncode == 2
    assert str(cut) in r.stderr and "lie past its end" in r.stderr
    assert "tensor 'blk.0.ids'" in r.stderr
    extra = tmp_path / "extra.gguf"
    extra.write_bytes(data + b"\0" * 32)
    r = run_dump(str(extra), ok=False)
    assert r.returncode == 2
    assert "32 bytes after the last tensor 'blk.0.ids'" in r.stderr
    assert f"(byte {len(data)})" in r.stderr
