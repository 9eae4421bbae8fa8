"""Resource bounds of the real `nibble` binary (NIBBLE_BIN): sizes and counts
read from a file never size an allocation before they are checked, and
conversions stream.

How memory is measured: nibble runs as the child of a small launcher process
(`python -I -S`, about 10 MB) that applies RLIMIT_AS and reads nibble's own
peak RSS from os.wait4(). (ru_maxrss of a child forked straight from pytest
would start at pytest's own RSS, which the kernel carries over at exec.)

1. nibble itself runs under RLIMIT_AS = 1 GiB (--threads 2) on small valid
   inputs: convert (safetensors and GGUF), dequant, report. This is what makes
   the limit a proof below.
2. Hostile declarations, each under RLIMIT_AS = 1 GiB: exit 2, one error line
   naming the file, the key or tensor, and the exact byte offset, and a peak
   RSS under 100 MB:
   - GGUF n_tensors / n_kv of 10^12 (in a small file), and of 10^9 in sparse
     files big enough to hold them (33 GB / 14 GB apparent size, no blocks):
     the count passes the bytes-left check there, so only growing the tables
     as entries parse (nothing reserved from the count) keeps the memory small;
     the second entry is broken and its offset is expected;
   - a GGUF tensor of 2^60 bytes (ne [2^30, 2^29] F16), dims whose product
     wraps ([2^32, 2^32]), a GGUF string, key and tensor name of 2^40 bytes,
     arrays of 2^40 u8 and string elements, a 2^40-byte string inside an
     array; the string of 2^40 bytes also in a sparse file of more than
     2^40 bytes (the bytes-left check passes, the length limit must refuse);
   - safetensors: a tensor of 2^60 bytes (data_offsets [0, 2^60]), a shape of
     2^60 bytes over a small range, a shape whose byte size overflows 64 bits,
     header lengths of 2^63, 99,999,999 in a 110-byte file and exactly the
     100,000,000-byte limit.
   A safetensors header cannot declare a count: its entries are bounded by
   the header length (< 100 MB). The test measures the peak RSS of converting
   header-only checkpoints of 5,000 and 45,000 zero-size tensors and bounds the
   growth per header byte (RSS_PER_HEADER_BYTE).
3. Peak RSS while converting a 512 MiB checkpoint of 32 [4096, 2048] F16
   tensors (16 MiB each): safetensors -> int8, GGUF -> q8_0, report with three
   schemes, and dequant of the int8 output back to f16: each under 200 MB
   (the checkpoint would not fit; a few tensors do).
4. A valid tensor too big for the address space (a sparse 2 GiB F16 tensor
   under RLIMIT_AS = 2.5 GiB): a clean exit 4 with one error line, or success
   (if nibble ever streams rows), never a crash signal; no temporaries.

Under AddressSanitizer (a NIBBLE_BIN that links __asan_init, as
scripts/test-sanitizers.sh builds it) address-space limits and RSS figures
mean nothing (ASan reserves terabytes of shadow address space and keeps a
quarantine of freed memory): the hostile inputs then run without the limit
and only their exit code, message and offset are checked; the memory
measurements are skipped with that reason.

Skipped without NIBBLE_BIN."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")



def _sanitized() -> bool:
    try:
        data = Path(NIBBLE).read_bytes()
    except OSError:
        return False
    return any(sym in data for sym in (b"__asan_init", b"__msan_init", b"__tsan_init"))


SANITIZED = bool(NIBBLE) and _sanitized()
needs_plain_build = pytest.mark.skipif(
    SANITIZED, reason="memory bounds are not measurable under a sanitizer (shadow memory, "
                      "quarantine); the plain build checks them")

GIB = 1 << 30
MB = 1000 * 1000
HOSTILE_PEAK = 100 * MB
CONVERT_PEAK = 200 * MB
# RSS growth allowed per byte of safetensors header (measured: about 20 for
# the parse and plan, 25 for a whole conversion, at about 50 header bytes per
# zero-size tensor).
RSS_PER_HEADER_BYTE = 40

# ---------------------------------------------------------------------------
# Running nibble under a launcher that reports its peak RSS.

LAUNCHER = r"""
import json, os, resource, sys
limit, out, err = int(sys.argv[1]), sys.argv[2], sys.argv[3]
argv = sys.argv[4:]
pid = os.fork()
if pid == 0:
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
sys.stdout.write(json.dumps({"status": status, "maxrss_kb": ru.ru_maxrss}))
"""


@dataclass
class Run:
    rc: int          # exit code, or -signal
    stdout: str
    stderr: str
    peak: int        # bytes

    def describe(self) -> str:
        return f"rc {self.rc}, peak RSS {self.peak / MB:.1f} MB\n{self.stderr}"


def measured(args: Sequence, tmp: Path, as_limit: int = 0, timeout: float = 300) -> Run:
    env = dict(os.environ)
    env.pop("NIBBLE_ISA", None)
    out, err = tmp / "nibble.stdout", tmp / "nibble.stderr"
    r = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, str(as_limit), str(out),
                        str(err), NIBBLE, *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, f"launcher failed: {r.stderr}"
    info = json.loads(r.stdout)
    status = info["status"]
    rc = os.waitstatus_to_exitcode(status)
    res = Run(rc, out.read_text(errors="replace"), err.read_text(errors="replace"),
              info["maxrss_kb"] * 1024)
    out.unlink()
    err.unlink()
    return res


def error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    errors = [l for l in lines if l.startswith("nibble: error: ")]
    assert len(errors) == 1, f"expected one error line:\n{stderr}"
    assert lines[-1] == errors[0], stderr
    assert all(l.startswith("nibble: warning: ") for l in lines[:-1]), stderr
    return errors[0]


def leftovers(parent: Path) -> List[str]:
    return sorted(p.name for p in parent.iterdir()
                  if "nibble-tmp" in p.name or "nibble-old" in p.name)


# ---------------------------------------------------------------------------
# Writing files by hand.

def gstr(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


T_U8, T_U32, T_STRING, T_ARRAY = 0, 4, 8, 9


def gguf_head(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def gguf_kv(key: bytes, vtype: int, value: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + value


def gguf_info(name: bytes, ne: Sequence[int], ggml_type: int, offset: int) -> bytes:
    return (gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            + struct.pack("<IQ", ggml_type, offset))


def st_file(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write_sparse(path: Path, head: bytes, size: int) -> None:
    """`head`, then zeros up to `size` bytes, without allocating blocks."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    assert path.stat().st_size == size


# ---------------------------------------------------------------------------
# 1. nibble runs under the limit used below.

def _small_safetensors(d: Path) -> Path:
    d.mkdir()
    rng = np.random.default_rng(5)
    tensors, data = {}, b""
    for i, (rows, cols) in enumerate([(256, 512), (128, 512), (512, 256)]):
        raw = (rng.standard_t(4, (rows, cols)) * 0.02).astype(np.float16).tobytes()
        tensors[f"model.layers.0.mlp.p{i}_proj.weight"] = {
            "dtype": "F16", "shape": [rows, cols],
            "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    (d / "model.safetensors").write_bytes(st_file(tensors, data))
    (d / "config.json").write_text('{"model_type": "llama"}\n')
    return d


def _small_gguf(p: Path) -> Path:
    rng = np.random.default_rng(6)
    kvs = gguf_kv(b"general.architecture", T_STRING, gstr(b"llama"))
    infos, data = b"", b""
    for i in range(3):
        raw = (rng.standard_t(4, (256, 512)) * 0.02).astype(np.float16).tobytes()
        infos += gguf_info(f"blk.{i}.ffn_up.weight".encode(), [512, 256], 1, len(data))
        data += raw
    head = gguf_head(3, 1) + kvs + infos
    p.write_bytes(head + bytes(-len(head) % 32) + data)
    return p


@needs_plain_build
def test_nibble_runs_under_the_address_space_limit(tmp_path):
    st = _small_safetensors(tmp_path / "st")
    gg = _small_gguf(tmp_path / "m.gguf")
    runs = {
        "convert int4": ["convert", st, tmp_path / "ct", "--scheme", "int4", "--threads", "2"],
        "dequant f32": ["dequant", tmp_path / "ct", tmp_path / "plain", "--dtype", "f32",
                        "--threads", "2"],
        "report": ["report", st, "--scheme", "int8,int4,int4-g32", "--threads", "2"],
        "convert q4_1": ["convert", gg, tmp_path / "o.gguf", "--scheme", "q4_1", "--threads", "2"],
    }
    for what, args in runs.items():
        r = measured([*args, "--quiet"], tmp_path, as_limit=GIB)
        assert r.rc == 0, f"{what} under RLIMIT_AS 1 GiB: {r.describe()}"
        assert r.peak < HOSTILE_PEAK, f"{what}: {r.describe()}"
        print(f"{what}: peak RSS {r.peak / MB:.1f} MB under RLIMIT_AS 1 GiB")


# ---------------------------------------------------------------------------
# 2. Hostile declarations.

@dataclass
class Hostile:
    path: Path
    needles: List[str]
    offset: int


def _gguf_cases(d: Path) -> dict:
    c = {}

    def small(name, raw, needles, offset):
        p = d / f"{name}.gguf"
        p.write_bytes(raw + bytes(64))
        c[name] = Hostile(p, needles, offset)

    small("n_tensors_1e12", gguf_head(10**12, 0),
          ["n_tensors 1000000000000 cannot fit"], 8)
    small("n_kv_1e12", gguf_head(0, 10**12), ["n_kv 1000000000000 cannot fit"], 16)

    # Counts that the (sparse) file is big enough to hold: the first entry is
    # valid, the second one (all zeros) has an empty name / key.
    info0 = gguf_info(b"a", [32], 0, 0)
    p = d / "n_tensors_1e9_sparse.gguf"
    write_sparse(p, gguf_head(10**9, 0) + info0, 24 + 33 * 10**9 + 4096)
    c["n_tensors_1e9_sparse"] = Hostile(p, ["tensor info 1", "empty tensor name"],
                                        24 + len(info0))
    kv0 = gguf_kv(b"general.architecture", T_STRING, gstr(b"llama"))
    p = d / "n_kv_1e9_sparse.gguf"
    write_sparse(p, gguf_head(0, 10**9) + kv0, 24 + 14 * 10**9 + 4096)
    c["n_kv_1e9_sparse"] = Hostile(p, ["key-value pair 1", "empty key"], 24 + len(kv0))

    # A tensor of 2^60 bytes; dims whose product wraps to 0.
    arch = gguf_kv(b"general.architecture", T_STRING, gstr(b"llama"))
    name = b"blk.0.ffn_up.weight"
    at_info = 24 + len(arch)
    off_at = at_info + 8 + len(name) + 4 + 16 + 4      # the info's data offset field
    raw = gguf_head(1, 1) + arch + gguf_info(name, [1 << 30, 1 << 29], 1, 0)
    small("tensor_2p60_bytes", raw + bytes(-len(raw) % 32),
          ["tensor 'blk.0.ffn_up.weight'", "1152921504606846976 bytes",
           "extend past the end of the file"], off_at)
    raw = gguf_head(1, 1) + arch + gguf_info(name, [1 << 32, 1 << 32], 1, 0)
    small("dims_wrap", raw + bytes(-len(raw) % 32),
          ["tensor 'blk.0.ffn_up.weight'", "element count", "overflows"],
          at_info + 8 + len(name) + 4 + 8)             # ne[1]

    # 2^40-byte strings and 2^40-element arrays.
    big = 1 << 40
    lim = f"exceeds the limit of {1 << 30}"
    small("string_2p40",
          gguf_head(0, 1) + gstr(b"general.name") + struct.pack("<IQ", T_STRING, big),
          ["key 'general.name'", f"string length {big} {lim}"], 24 + 8 + 12 + 4)
    small("key_2p40", gguf_head(0, 1) + struct.pack("<Q", big),
          ["key-value pair 0", f"key length {big} {lim}"], 24)
    small("tensor_name_2p40", gguf_head(1, 0) + struct.pack("<Q", big),
          ["tensor info 0", f"tensor name length {big} {lim}"], 24)
    key = b"tokenizer.ggml.tokens"
    small("string_array_2p40",
          gguf_head(0, 1) + gstr(key) + struct.pack("<IIQ", T_ARRAY, T_STRING, big),
          [f"key '{key.decode()}'", f"array of {big} elements {lim}"], 24 + 8 + len(key) + 4 + 4)
    key = b"test.bytes"
    small("u8_array_2p40", gguf_head(0, 1) + gstr(key) + struct.pack("<IIQ", T_ARRAY, T_U8, big),
          [f"key '{key.decode()}'", f"array of {big} elements {lim}"], 24 + 8 + len(key) + 4 + 4)
    key = b"tokenizer.ggml.merges"
    small("string_element_2p40",
          gguf_head(0, 1) + gstr(key) + struct.pack("<IIQ", T_ARRAY, T_STRING, 3) + gstr(b"a b")
          + struct.pack("<Q", big),
          [f"key '{key.decode()}'", f"string element 1 length {big} {lim}"],
          24 + 8 + len(key) + 4 + 12 + 11)

    # The 2^40-byte string in a file that really has 2^40 bytes left.
    head = gguf_head(0, 1) + gstr(b"general.name") + struct.pack("<IQ", T_STRING, big)
    p = d / "string_2p40_sparse.gguf"
    write_sparse(p, head, len(head) + big + 4096)
    c["string_2p40_sparse"] = Hostile(p, ["key 'general.name'", f"string length {big} {lim}"],
                                      24 + 8 + 12 + 4)
    return c


def _st_cases(d: Path) -> dict:
    c = {}

    def add(name, raw, needles, offset):
        p = d / f"{name}.safetensors"
        p.write_bytes(raw)
        c[name] = Hostile(p, needles, offset)

    w = {"w": {"dtype": "F16", "shape": [1 << 59], "data_offsets": [0, 1 << 60]}}
    add("tensor_2p60_bytes", st_file(w, bytes(64)),
        ["tensor 'w'", str(1 << 60), "past the end of the file"], 9)
    w = {"w": {"dtype": "F16", "shape": [1 << 30, 1 << 29], "data_offsets": [0, 64]}}
    add("shape_2p60_bytes", st_file(w, bytes(64)), ["tensor 'w'", str(1 << 60)], 9)
    w = {"w": {"dtype": "F32", "shape": [1 << 62, 4], "data_offsets": [0, 64]}}
    add("shape_overflows", st_file(w, bytes(64)), ["tensor 'w'", "overflows 64 bits"], 9)
    add("header_len_2p63", struct.pack("<Q", 1 << 63) + b"{}",
        ["header length 9223372036854775808", "limit of 100000000"], 0)
    add("header_len_past_file", struct.pack("<Q", 99_999_999) + b"{}" + bytes(100),
        ["header length 99999999 exceeds the file"], 0)
    add("header_len_at_limit", struct.pack("<Q", 100_000_000) + b"{}" + bytes(100),
        ["header length 100000000", "limit of 100000000"], 0)
    return c


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    cases = {**{f"gguf-{k}": v for k, v in _gguf_cases(d).items()},
             **{f"safetensors-{k}": v for k, v in _st_cases(d).items()}}
    yield cases
    shutil.rmtree(d, ignore_errors=True)


CASE_IDS = ["gguf-n_tensors_1e12", "gguf-n_kv_1e12", "gguf-n_tensors_1e9_sparse",
            "gguf-n_kv_1e9_sparse", "gguf-tensor_2p60_bytes", "gguf-dims_wrap",
            "gguf-string_2p40", "gguf-key_2p40", "gguf-tensor_name_2p40",
            "gguf-string_array_2p40", "gguf-u8_array_2p40", "gguf-string_element_2p40",
            "gguf-string_2p40_sparse",
            "safetensors-tensor_2p60_bytes", "safetensors-shape_2p60_bytes",
            "safetensors-shape_overflows", "safetensors-header_len_2p63",
            "safetensors-header_len_past_file", "safetensors-header_len_at_limit"]


@pytest.mark.parametrize("case", CASE_IDS)
def test_hostile_declaration_rejected_before_allocating(case, hostile, tmp_path):
    h = hostile[case]
    gguf_in = case.startswith("gguf-")
    out = tmp_path / ("out.gguf" if gguf_in else "out")
    args = ["convert", h.path, out, "--scheme", "q8_0" if gguf_in else "int8", "--threads", "2"]
    size = h.path.stat().st_size
    r = measured(args, tmp_path, as_limit=0 if SANITIZED else GIB)
    assert r.rc == 2, f"expected exit 2: {r.describe()}"
    line = error_line(r.stderr)
    assert str(h.path) in line, line
    for n in h.needles:
        assert n in line, f"{n!r} not in: {line}"
    offsets = re.findall(r"\(byte (\d+)\)", line)
    assert offsets == [str(h.offset)], f"expected (byte {h.offset}) in: {line}"
    if not SANITIZED:
        assert r.peak < HOSTILE_PEAK, r.describe()
    assert not os.path.lexists(out)
    assert leftovers(tmp_path) == []
    assert h.path.stat().st_size == size


# --- safetensors: memory per header byte. -----------------------------------

def _header_only(d: Path, n: int) -> int:
    """n zero-size U8 tensors with short names (about 50 header bytes
    each, the densest a header gets); returns the header length."""
    d.mkdir()
    entries = ",".join('"%x":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}' % i
                       for i in range(n))
    text = ("{" + entries + "}").encode()
    text += b" " * (-(8 + len(text)) % 8)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    return len(text)


@needs_plain_build
def test_safetensors_header_memory_is_linear_in_its_length(tmp_path):
    """RSS growth per header byte between 5,000 and 45,000 zero-size tensors
    stays under RSS_PER_HEADER_BYTE (so the 100 MB header limit bounds the
    memory a header can cost), for a whole conversion."""
    peaks, lengths = [], []
    for n in (5_000, 45_000):
        src = tmp_path / f"h{n}"
        lengths.append(_header_only(src, n))
        r = measured(["convert", src, tmp_path / f"o{n}", "--quiet"], tmp_path)
        assert r.rc == 0, r.describe()
        peaks.append(r.peak)
    slope = (peaks[1] - peaks[0]) / (lengths[1] - lengths[0])
    print(f"header {lengths[0]} -> {lengths[1]} bytes: peak RSS {peaks[0] / MB:.1f} -> "
          f"{peaks[1] / MB:.1f} MB, {slope:.1f} bytes of RSS per header byte "
          f"(a 100 MB header: about {slope * 100:.0f} MB)")
    assert slope < RSS_PER_HEADER_BYTE, (lengths, peaks)


# ---------------------------------------------------------------------------
# 3. Peak memory of conversions of a 512 MiB checkpoint.

N_BIG, ROWS, COLS = 32, 4096, 2048      # 32 x 16 MiB of F16


def _pool() -> np.ndarray:
    pool = (np.random.default_rng(9).standard_t(4, 1 << 20) * 0.02).astype(np.float16)
    return np.resize(pool, ROWS * COLS)


def _write_big_safetensors(src: Path) -> None:
    src.mkdir()
    nbytes = ROWS * COLS * 2
    header = {f"model.layers.{i}.mlp.up_proj.weight":
              {"dtype": "F16", "shape": [ROWS, COLS],
               "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(N_BIG)}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    block = _pool()
    with open(src / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(N_BIG):
            np.roll(block, 4099 * i).tofile(f)
    (src / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float16"}\n')


def _write_big_gguf(path: Path) -> None:
    kvs = gguf_kv(b"general.architecture", T_STRING, gstr(b"llama"))
    infos = b""
    nbytes = ROWS * COLS * 2
    for i in range(N_BIG):
        infos += gguf_info(f"blk.{i}.ffn_up.weight".encode(), [COLS, ROWS], 1, i * nbytes)
    head = gguf_head(N_BIG, 1) + kvs + infos
    head += bytes(-len(head) % 32)
    block = _pool()
    with open(path, "wb") as f:
        f.write(head)
        for i in range(N_BIG):
            np.roll(block, 4099 * i).tofile(f)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    base = tmp_path_factory.mktemp("big512")
    st = base / "in"
    _write_big_safetensors(st)
    gg = base / "in.gguf"
    _write_big_gguf(gg)
    assert (st / "model.safetensors").stat().st_size > 512 * (1 << 20)
    yield {"base": base, "st": st, "gguf": gg, "ct": base / "ct-int8"}
    shutil.rmtree(base, ignore_errors=True)


def _bounded(r: Run, what: str) -> None:
    assert r.rc == 0, f"{what}: {r.describe()}"
    print(f"{what}: peak RSS {r.peak / MB:.1f} MB (checkpoint {N_BIG} x 16 MiB)")
    assert r.peak < CONVERT_PEAK, f"{what}: {r.describe()}"


@needs_plain_build
def test_convert_safetensors_memory_bounded(big, tmp_path):
    r = measured(["convert", big["st"], big["ct"], "--scheme", "int8", "--quiet"], tmp_path)
    _bounded(r, "convert int8")


@needs_plain_build
def test_convert_gguf_memory_bounded(big, tmp_path):
    r = measured(["convert", big["gguf"], tmp_path / "o.gguf", "--scheme", "q8_0", "--quiet"],
                 tmp_path)
    _bounded(r, "convert q8_0")


@needs_plain_build
def test_report_memory_bounded(big, tmp_path):
    r = measured(["report", big["st"], "--scheme", "int8,int4,int4-g32-asym", "--quiet"],
                 tmp_path)
    _bounded(r, "report int8,int4,int4-g32-asym")


@needs_plain_build
def test_dequant_memory_bounded(big, tmp_path):
    if not big["ct"].exists():
        r = measured(["convert", big["st"], big["ct"], "--scheme", "int8", "--quiet"], tmp_path)
        assert r.rc == 0, r.describe()
    r = measured(["dequant", big["ct"], tmp_path / "plain", "--dtype", "f16", "--quiet"],
                 tmp_path)
    _bounded(r, "dequant int8 -> f16")


# ---------------------------------------------------------------------------
# 4. Out of address space: a clean error.

def _sparse_tensor_inputs(d: Path):
    rows, cols = 65536, 16384            # 2 GiB of F16 zeros, no blocks
    nbytes = rows * cols * 2
    st = d / "st"
    st.mkdir()
    text = json.dumps({"model.layers.0.mlp.up_proj.weight":
                       {"dtype": "F16", "shape": [rows, cols],
                        "data_offsets": [0, nbytes]}}).encode()
    text += b" " * (-(8 + len(text)) % 8)
    write_sparse(st / "model.safetensors", struct.pack("<Q", len(text)) + text,
                 8 + len(text) + nbytes)
    head = (gguf_head(1, 1) + gguf_kv(b"general.architecture", T_STRING, gstr(b"llama"))
            + gguf_info(b"blk.0.ffn_up.weight", [cols, rows], 1, 0))
    head += bytes(-len(head) % 32)
    gg = d / "m.gguf"
    write_sparse(gg, head, len(head) + nbytes)
    return st, gg


@needs_plain_build
@pytest.mark.parametrize("fmt, scheme", [("safetensors", "int8"), ("safetensors", "int4"),
                                         ("gguf", "q8_0"), ("gguf", "q4_0")])
def test_tensor_too_big_for_the_address_space_fails_cleanly(fmt, scheme, tmp_path):
    st, gg = _sparse_tensor_inputs(tmp_path)
    src = st if fmt == "safetensors" else gg
    work = tmp_path / "work"
    work.mkdir()
    out = work / ("out" if fmt == "safetensors" else "out.gguf")
    try:
        r = measured(["convert", src, out, "--scheme", scheme, "--threads", "2", "--quiet"],
                     tmp_path, as_limit=5 * GIB // 2)
    finally:
        shutil.rmtree(st)      # 2 GiB apparent size each, no blocks
        gg.unlink()
    assert r.rc in (0, 4), f"expected success or a clean exit 4: {r.describe()}"
    if r.rc == 4:
        line = error_line(r.stderr)
        assert "out of memory" in line, line
        assert not os.path.lexists(out)
    print(f"{fmt} {scheme}: {r.stderr.strip() or 'converted'}")
    assert leftovers(work) == []
