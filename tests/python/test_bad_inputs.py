"""End to end: the hostile and broken inputs of shared/docs/bad-inputs.md fed to
the real `nibble convert` binary (NIBBLE_BIN, as test_convert_e2e.py).

Rows covered: safetensors files (#1-#18), sharded checkpoints (#19-#23), config
file and command line (#34-#42). Every hostile file is written here byte by
byte (struct + hand-written JSON text; duplicates are written as text because a
JSON library would keep only one of them).

A rejected case must: exit with the documented code (1 usage, 2 bad input,
3 I/O; never a signal), print exactly one error line on stderr (warnings may
come before it) naming the file and the tensor / key / config line / byte
offset the row asks for, leave nothing under OUT and no `.OUT.nibble-tmp-*`
next to it, and leave the input byte for byte as it was.

Accepted cases (#14, #15, #17, symlinked shards) convert and are read back with
the `safetensors` package and the independent decoder (scripts/ct_decode.py).

Skipped without NIBBLE_BIN."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from safetensors import safe_open

import ct_decode as ctd

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

# ---------------------------------------------------------------------------
# Writing safetensors by hand.

DSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "C64": 8, "F8_E4M3": 1,
         "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}


def st_blob(header, data: bytes = b"", length: Optional[int] = None) -> bytes:
    """u64 header length (or `length`, to lie), the header, the data section.
    `header`: bytes/str written as is, or a dict dumped compactly."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def entry(dtype: str, shape: Sequence[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def valid_blob(tensors: Dict[str, np.ndarray], codes: Optional[Dict[str, str]] = None,
               metadata: Optional[dict] = None) -> bytes:
    """A well-formed file (header padded with spaces to 8 bytes, as the
    reference writer does). Arrays are written as raw little-endian bytes;
    `codes` overrides the dtype code (e.g. BF16 carried as uint16)."""
    codes = codes or {}
    np_codes = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32",
                np.dtype(np.float64): "F64", np.dtype(np.int64): "I64",
                np.dtype(np.int32): "I32", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
                np.dtype(np.bool_): "BOOL", np.dtype(np.uint16): "U16"}
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = entry(codes.get(name, np_codes[a.dtype]), a.shape, len(data),
                             len(data) + len(raw))
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return st_blob(text, data)


def f16_matrix(rows: int, cols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_t(4, (rows, cols)) * 0.02).astype(np.float16)


def tiny_model() -> Dict[str, np.ndarray]:
    """Something every rule set quantizes: two linear weights, a bias, lm_head."""
    return {"model.layers.0.mlp.up_proj.weight": f16_matrix(16, 128, 1),
            "model.layers.0.mlp.up_proj.bias": f16_matrix(1, 16, 2).reshape(16),
            "model.layers.0.mlp.down_proj.weight": f16_matrix(8, 128, 3),
            "lm_head.weight": f16_matrix(32, 128, 4)}


def at(text, needle, nth: int = 1) -> int:
    """Byte offset in the FILE of the nth occurrence of `needle` in the header
    text (the header starts after the 8-byte length)."""
    if isinstance(text, str):
        text = text.encode()
    if isinstance(needle, str):
        needle = needle.encode()
    pos = -1
    for _ in range(nth):
        pos = text.index(needle, pos + 1)
    return 8 + pos


def byte(n: int) -> str:
    return f"(byte {n})"


# ---------------------------------------------------------------------------
# Running nibble and checking what it leaves behind.


def nibble(*args, env: Optional[dict] = None, preexec: Optional[Callable] = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("NIBBLE_ISA", None)
    full_env.update(env or {})
    r = subprocess.run([NIBBLE, *map(str, args)], capture_output=True, env=full_env,
                       preexec_fn=preexec, timeout=timeout)
    # Decoded leniently here; check_rejected asserts that stderr is UTF-8.
    r.stderr_bytes = r.stderr
    r.stdout = r.stdout.decode("utf-8", "surrogateescape")
    r.stderr = r.stderr.decode("utf-8", "surrogateescape")
    return r


def snapshot(root: Path) -> Dict[str, str]:
    """Relative path -> sha256 of every file below `root` (or of `root`),
    symlinks followed for their contents and their targets recorded."""
    out: Dict[str, str] = {}
    paths = [root] if not root.is_dir() else sorted(root.rglob("*"))
    for p in paths:
        rel = str(p.relative_to(root)) if p != root else "."
        if p.is_symlink():
            out[rel + " ->"] = os.readlink(p)
        if p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel + "/"] = "dir"
    return out


def error_line(stderr: str) -> str:
    """The one error line; anything before it must be a warning."""
    lines = stderr.splitlines()
    errors = [l for l in lines if l.startswith("nibble: error: ")]
    assert len(errors) == 1, f"expected one error line, got:\n{stderr}"
    assert lines[-1] == errors[0], f"the error line is not the last line:\n{stderr}"
    others = [l for l in lines[:-1] if not l.startswith("nibble: warning: ")]
    assert not others, f"lines other than warnings before the error:\n{stderr}"
    return errors[0]


def assert_utf8(r: subprocess.CompletedProcess) -> None:
    try:
        r.stderr_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"stderr is not UTF-8 ({e}): {r.stderr!r}") from None


def leftovers(parent: Path) -> List[str]:
    return sorted(p.name for p in parent.iterdir()
                  if "nibble-tmp" in p.name or "nibble-old" in p.name)


def check_rejected(r: subprocess.CompletedProcess, rc: int, out: Path,
                   needles: Sequence[str], before: Dict[Path, Dict[str, str]],
                   out_existed: bool = False, parent: Optional[Path] = None) -> str:
    assert 0 < r.returncode < 128, \
        f"rc {r.returncode}: expected {rc} (never 0, never a signal)\n{r.stderr}"
    assert r.returncode == rc, f"rc {r.returncode}, expected {rc}\n{r.stderr}"
    line = error_line(r.stderr)
    assert r.stdout == "", f"a rejected run printed on stdout:\n{r.stdout}"
    assert_utf8(r)
    for n in needles:
        if isinstance(n, re.Pattern):
            assert n.search(line), f"{n.pattern!r} not in: {line}"
        else:
            assert n in line, f"{n!r} not in: {line}"
    if not out_existed:
        assert not os.path.lexists(out), f"{out} was created"
    parent = parent or out.parent
    assert leftovers(parent) == [], leftovers(parent)
    for root, snap in before.items():
        assert snapshot(root) == snap, f"{root} changed"
    return line


# ---------------------------------------------------------------------------
# The parametrized table: each case builds its input in a fresh directory D
# and returns what to run and what the one error line must contain.


@dataclass
class Run:
    input: Path                      # IN
    needles: List                    # substrings (or compiled regexes) of the error line
    rc: int = 2
    args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    out: Optional[Path] = None       # default D/out
    watch: List[Path] = field(default_factory=list)  # also unchanged (configs)
    parent: Optional[Path] = None    # where temporaries would be (default OUT's parent)
    out_existed: bool = False


CASES: List[Tuple[str, Callable[[Path], Run], object]] = []


def case(case_id: str, marks=()):
    def register(fn):
        CASES.append((case_id, fn, marks))
        return fn
    return register


def model_dir(d: Path, blob: bytes, name: str = "model.safetensors") -> Tuple[Path, Path]:
    src = d / "in"
    src.mkdir()
    (src / name).write_bytes(blob)
    (src / "config.json").write_text('{"model_type": "llama"}\n')
    return src, src / name


def single(blob: bytes, *needles, offset: Optional[int] = None, rc: int = 2):
    """IN = D/in (model directory holding model.safetensors = blob); the error
    names D/in/model.safetensors and, if given, the byte offset."""
    def build(d: Path) -> Run:
        src, f = model_dir(d, blob)
        extra = [byte(offset)] if offset is not None else []
        return Run(src, [str(f) + ": ", *needles, *extra], rc)
    return build


def header_case(case_id: str, header, *needles, data: bytes = b"", offset=None,
                length: Optional[int] = None, marks=()):
    CASES.append((case_id, single(st_blob(header, data, length), *needles, offset=offset),
                  marks))


# -- #1 too short ------------------------------------------------------------
CASES.append(("01-empty-file", single(b"", "too short to be safetensors", "(0 bytes", offset=0),
              ()))
CASES.append(("01-seven-bytes", single(b"\x10\0\0\0\0\0\0", "too short to be safetensors",
                                       "(7 bytes", offset=0), ()))


@case("01-empty-file-as-input")
def _(d: Path) -> Run:
    f = d / "empty.safetensors"
    f.write_bytes(b"")
    return Run(f, [str(f) + ": ", "too short to be safetensors", byte(0)])


@case("01-empty-shard")
def _(d: Path) -> Run:
    src = sharded(d)
    (src / SHARDS[1]).write_bytes(b"abc")
    return Run(src, [str(src / SHARDS[1]) + ": ", "too short to be safetensors", byte(0)])


# -- #2 header length ----------------------------------------------------------
_small = b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}'
header_case("02-length-past-end", _small, "header length 1000 exceeds the file", data=b"abcd",
            length=1000, offset=0)
header_case("02-length-just-below-limit", _small, "header length 99999999 exceeds the file",
            data=b"abcd", length=99_999_999, offset=0)
header_case("02-length-100MB", _small, "header length 100000000 is not below the limit",
            data=b"abcd", length=100_000_000, offset=0)
header_case("02-length-2^63", _small, f"header length {2**63} is not below the limit",
            data=b"abcd", length=2**63, offset=0)
header_case("02-length-2^64-1", _small, f"header length {2**64 - 1} is not below the limit",
            data=b"abcd", length=2**64 - 1, offset=0)

# -- #3 not UTF-8 / not JSON / not an object -----------------------------------
_e = '{"dtype":"U8","shape":[2],"data_offsets":[0,2]}'
_h = ('{"w\xff.weight":' + _e + '}').encode("latin-1")
# The message itself is checked for UTF-8 in test_error_line_is_utf8.
NOT_UTF8_HEADERS = {"03-not-utf8-key": _h}
header_case("03-not-utf8-key", _h, "not valid JSON", data=b"ab", offset=at(_h, b"\xff"))
_h = b'{"__metadata__":{"k":"v\xc3"},"w":' + _e.encode() + b"}"
NOT_UTF8_HEADERS["03-truncated-utf8-value"] = _h
header_case("03-truncated-utf8-value", _h, "not valid JSON", data=b"ab", offset=at(_h, b'"}'))
_h = '{"w.weight":nope}'
header_case("03-not-json-literal", _h, "not valid JSON", offset=at(_h, "o", 1))
_h = '{"w.weight":' + _e
# The offset of the end of the header: where the missing '}' should be.
header_case("03-truncated-json", _h, "not valid JSON", "end of input", data=b"ab",
            offset=8 + len(_h))
_h = '{"w":' + _e + '} x'
header_case("03-garbage-after-object", _h, "not valid JSON", data=b"ab", offset=at(_h, "x"))
header_case("03-array", "[1, 2]", "header is not a JSON object (found an array)", offset=8)
header_case("03-number", "42", "header is not a JSON object (found a number)", offset=8)
header_case("03-string", '"x"', "header is not a JSON object (found a string)", offset=8)
header_case("03-null", "null", "header is not a JSON object (found null)", offset=8)
header_case("03-empty-header", "", "not valid JSON", offset=8)
_h = '{"w":' + _e + '}\0{"x":1}'
header_case("03-nul-byte", _h, "header contains a NUL byte", data=b"ab", offset=at(_h, "\0"))
_h = "\ufeff{}".encode()
header_case("03-byte-order-mark", _h, "byte order mark", offset=8)

# -- #4 duplicates (JSON text written by hand) ---------------------------------
_h = '{"w.weight":' + _e + ',"w.weight":' + _e.replace("[0,2]", "[2,4]") + "}"
header_case("04-duplicate-tensor", _h, "duplicate tensor name 'w.weight'", data=b"abcd",
            offset=at(_h, '"w.weight"', 2))
_h = '{"__metadata__":{"a":"b"},"w":' + _e + ',"__metadata__":{"c":"d"}}'
header_case("04-duplicate-metadata", _h, "duplicate key '__metadata__'", data=b"ab",
            offset=at(_h, '"__metadata__"', 2))
_h = '{"__metadata__":{"a":"b","a":"c"},"w":' + _e + "}"
header_case("04-duplicate-metadata-key", _h, "duplicate __metadata__ key 'a'", data=b"ab",
            offset=at(_h, '"a"', 2))
_h = '{"w.weight":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}'
header_case("04-duplicate-field", _h, "tensor 'w.weight'", "field 'dtype' given twice",
            data=b"ab", offset=at(_h, '"w.weight"'))


# -- #5 missing / extra / wrongly typed fields ----------------------------------
def entry_case(case_id: str, entry_text: str, *needles, data: bytes = b"ab", marks=()):
    h = '{"w.weight":' + entry_text + "}"
    header_case(case_id, h, "tensor 'w.weight'", *needles, data=data,
                offset=at(h, '"w.weight"'), marks=marks)


entry_case("05-missing-dtype", '{"shape":[2],"data_offsets":[0,2]}', "missing field 'dtype'")
entry_case("05-missing-shape", '{"dtype":"U8","data_offsets":[0,2]}', "missing field 'shape'")
entry_case("05-missing-offsets", '{"dtype":"U8","shape":[2]}', "missing field 'data_offsets'")
entry_case("05-extra-field", '{"dtype":"U8","shape":[2],"data_offsets":[0,2],"layout":"x"}',
           "unexpected field 'layout'")
entry_case("05-dtype-number", '{"dtype":8,"shape":[2],"data_offsets":[0,2]}',
           "field 'dtype' must be a string")
entry_case("05-shape-string", '{"dtype":"U8","shape":"2","data_offsets":[0,2]}',
           "field 'shape' must be an array of integers")
entry_case("05-offsets-object", '{"dtype":"U8","shape":[2],"data_offsets":{"b":0}}',
           "field 'data_offsets' must be an array of two integers")
entry_case("05-entry-array", '["U8",[2],[0,2]]', "entry must be a JSON object")
entry_case("05-entry-null", "null", "entry must be a JSON object")

# -- #6 unknown dtype ------------------------------------------------------------
entry_case("06-unknown-dtype", '{"dtype":"F128","shape":[2],"data_offsets":[0,2]}',
           "unknown dtype 'F128'")
entry_case("06-f4-odd-elements", '{"dtype":"F4","shape":[3],"data_offsets":[0,2]}',
           "F4", "not a whole number of bytes")
entry_case("06-lowercase-dtype", '{"dtype":"f16","shape":[1],"data_offsets":[0,2]}',
           "unknown dtype 'f16'")

# -- #7 bad shapes ---------------------------------------------------------------
entry_case("07-negative-dim", '{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}',
           "field 'shape'", "negative")
entry_case("07-fractional-dim", '{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}',
           "field 'shape'", "non-integer")
entry_case("07-exponent-dim", '{"dtype":"U8","shape":[2e0],"data_offsets":[0,2]}',
           "field 'shape'", "non-integer")
entry_case("07-string-dim", '{"dtype":"U8","shape":["2"],"data_offsets":[0,2]}',
           "field 'shape'", "string")
entry_case("07-nested-dim", '{"dtype":"U8","shape":[[2]],"data_offsets":[0,2]}',
           "field 'shape'", "array")
entry_case("07-nine-dims", '{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,2]}',
           "field 'shape' has more than 8 dimensions")
entry_case("07-dim-2^64-1", '{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,2]}',
           "field 'shape'", "larger than 2^63-1")

# -- #8 byte size overflow ---------------------------------------------------------
entry_case("08-overflow-2^32x2^32-F16",
           '{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,2]}',
           "byte size overflows 64 bits")
entry_case("08-overflow-2^62x4-F32",
           '{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,2]}',
           "byte size overflows 64 bits")
# 2^64 bytes wrap to 0 in unchecked arithmetic, which [0, 0] would match.
entry_case("08-overflow-wraps-to-zero",
           '{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}',
           "byte size overflows 64 bits", data=b"")
# Like the reference reader (checked product left to right), an overflow
# before a 0 dimension is still an overflow.
entry_case("08-overflow-before-zero-dim",
           '{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}',
           "byte size overflows 64 bits", data=b"")

# -- #9 data_offsets --------------------------------------------------------------
entry_case("09-reversed", '{"dtype":"U8","shape":[2],"data_offsets":[2,0]}',
           "data_offsets [2, 0] are reversed")
entry_case("09-one-integer", '{"dtype":"U8","shape":[2],"data_offsets":[2]}',
           "field 'data_offsets' must hold exactly two integers")
entry_case("09-three-integers", '{"dtype":"U8","shape":[2],"data_offsets":[0,1,2]}',
           "field 'data_offsets' must hold exactly two integers")
entry_case("09-negative", '{"dtype":"U8","shape":[2],"data_offsets":[-2,0]}',
           "field 'data_offsets'", "negative")
entry_case("09-string", '{"dtype":"U8","shape":[2],"data_offsets":[0,"2"]}',
           "field 'data_offsets'", "string")
entry_case("09-float", '{"dtype":"U8","shape":[2],"data_offsets":[0,2.0]}',
           "field 'data_offsets'", "non-integer")

# -- #10 size mismatch: both numbers named ------------------------------------------
entry_case("10-size-mismatch", '{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}',
           "hold 12 bytes", "needs 16", data=b"x" * 12)
entry_case("10-size-mismatch-larger", '{"dtype":"F16","shape":[3],"data_offsets":[0,8]}',
           "hold 8 bytes", "needs 6", data=b"x" * 8)

# -- #11 past the end of the file ----------------------------------------------------
entry_case("11-past-end", '{"dtype":"F32","shape":[4],"data_offsets":[0,16]}',
           "end past the end of the file (data section holds 8 bytes)", data=b"x" * 8)
entry_case("11-past-end-2^60", '{"dtype":"U8","shape":[1152921504606846976],'
           '"data_offsets":[0,1152921504606846976]}', "end past the end of the file",
           data=b"x" * 8)
entry_case("11-past-end-2^64", '{"dtype":"U8","shape":[8],'
           '"data_offsets":[18446744073709551607,18446744073709551615]}',
           "end past the end of the file", data=b"x" * 8)

# -- #12 overlap, hole, trailing bytes ------------------------------------------------
_h = json.dumps({"a": entry("U8", [16], 0, 16), "b": entry("U8", [16], 8, 24)},
                separators=(",", ":"))
header_case("12-overlap", _h, "tensor 'b'", "overlap tensor 'a'", data=b"x" * 24,
            offset=at(_h, '"b"'))
_h = json.dumps({"a": entry("U8", [8], 0, 8), "b": entry("U8", [8], 0, 8)},
                separators=(",", ":"))
header_case("12-same-range", _h, "overlap", data=b"x" * 8, offset=at(_h, '"b"'))
_h = json.dumps({"a": entry("U8", [8], 0, 8), "b": entry("U8", [8], 16, 24)},
                separators=(",", ":"))
header_case("12-hole", _h, "tensor 'b'", "leave a hole: bytes [8, 16)", data=b"x" * 24,
            offset=at(_h, '"b"'))
_h = json.dumps({"a": entry("U8", [8], 8, 16)}, separators=(",", ":"))
header_case("12-hole-at-start", _h, "tensor 'a'", "leave a hole: bytes [0, 8)", data=b"x" * 16,
            offset=at(_h, '"a"'))
_h = json.dumps({"a": entry("U8", [8], 0, 8)}, separators=(",", ":"))
header_case("12-trailing-bytes", _h, "8 bytes after the last tensor", data=b"x" * 16,
            offset=8 + len(_h) + 8)
header_case("12-trailing-bytes-no-tensor", "{}", "3 bytes after the last tensor",
            data=b"xyz", offset=8 + 2)

# -- #13 __metadata__ ----------------------------------------------------------------
_h = '{"__metadata__":"pt","w":' + _e + "}"
header_case("13-metadata-string", _h, "__metadata__ must be an object of strings",
            data=b"ab", offset=at(_h, '"__metadata__"'))
_h = '{"__metadata__":["pt"],"w":' + _e + "}"
header_case("13-metadata-array", _h, "__metadata__ must be an object of strings",
            data=b"ab", offset=at(_h, '"__metadata__"'))
_h = '{"__metadata__":{"format":1},"w":' + _e + "}"
header_case("13-metadata-number-value", _h, "__metadata__ key 'format'", "must be a string",
            data=b"ab", offset=at(_h, '"format"'))
_h = '{"__metadata__":{"format":{"x":"y"}},"w":' + _e + "}"
header_case("13-metadata-object-value", _h, "__metadata__ key 'format'", "must be a string",
            data=b"ab", offset=at(_h, '"format"'))
_h = '{"__metadata__":{"format":null},"w":' + _e + "}"
header_case("13-metadata-null-value", _h, "__metadata__ key 'format'", "must be a string",
            data=b"ab", offset=at(_h, '"format"'))


# -- #16 NaN / Inf in a tensor to quantize ---------------------------------------------
def nonfinite_case(case_id: str, code: str, value: float, word: str, row: int, col: int):
    @case(case_id)
    def _(d: Path) -> Run:
        m = tiny_model()
        bad = f16_matrix(16, 128, 7).astype(np.float32)
        bad[row, col] = value
        # A later one (in row-major order): the first is reported.
        bad[(row + 1, col) if row + 1 < 16 else (row, col + 5)] = value
        if code == "F16":
            arr = bad.astype(np.float16)
        elif code == "BF16":
            arr = ctd.f32_to_bf16_bits(bad)
        else:
            arr = bad
        name = "model.layers.1.mlp.gate_proj.weight"
        # After a good tensor: something is already in the temporary directory.
        m[name] = arr
        blob = valid_blob(m, codes={name: code})
        src, f = model_dir(d, blob)
        (n,) = struct.unpack("<Q", blob[:8])
        begin = json.loads(blob[8:8 + n])[name]["data_offsets"][0]
        return Run(src, [str(f) + ": ", f"tensor '{name}'", f"{word} at row {row}, column {col}",
                         f"(data at byte {8 + n + begin})"], 2,
                   args=["--scheme", "int4-g32"])


nonfinite_case("16-nan-f16", "F16", float("nan"), "NaN", 3, 17)
nonfinite_case("16-inf-bf16", "BF16", float("inf"), "+Inf", 0, 127)
nonfinite_case("16-neg-inf-f32", "F32", float("-inf"), "-Inf", 15, 0)


# -- #19-#23 sharded checkpoints --------------------------------------------------------
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def sharded(d: Path, index_text: Optional[str] = None, extra: Optional[dict] = None) -> Path:
    """D/in: two valid shards (a.weight + a.bias | b.weight), an index."""
    src = d / "in"
    src.mkdir()
    first = {"model.a.weight": f16_matrix(8, 64, 1), "model.a.bias": f16_matrix(1, 8, 2)[0]}
    first.update(extra or {})
    (src / SHARDS[0]).write_bytes(valid_blob(first))
    (src / SHARDS[1]).write_bytes(valid_blob({"model.b.weight": f16_matrix(8, 64, 3)}))
    if index_text is None:
        index_text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[0],
                                 "model.b.weight": SHARDS[1]})
    (src / "model.safetensors.index.json").write_text(index_text)
    (src / "config.json").write_text('{"model_type": "llama"}\n')
    return src


def index_json(weight_map: dict) -> str:
    return json.dumps({"metadata": {"total_size": 2 * 8 * 64 * 2 + 16}, "weight_map": weight_map},
                      indent=2)


def index_case(case_id: str, text: str, *needles, offset: Optional[int] = None, marks=()):
    @case(case_id, marks)
    def _(d: Path) -> Run:
        src = sharded(d, text)
        idx = src / "model.safetensors.index.json"
        extra = [byte(offset)] if offset is not None else []
        return Run(src, [str(idx) + ": ", *needles, *extra])


_t = '{"weight_map": {"model.a.weight": "model-00001-of-00002.safetensors",}}'
index_case("19-index-not-json", _t, "index is not valid JSON", offset=_t.index("}"))
index_case("19-index-array", "[]", "index is not a JSON object", offset=0)
index_case("19-no-weight-map", '{"metadata": {"total_size": 1}}', "index has no 'weight_map'")
index_case("19-weight-map-array", '{"weight_map": ["a"]}', "'weight_map' is not an object")
_t = ('{"weight_map": {"model.a.weight": "' + SHARDS[0] + '", "model.a.bias": 7, '
      '"model.b.weight": "' + SHARDS[1] + '"}}')
index_case("19-value-not-string", _t, "weight_map entry 'model.a.bias'",
           "shard name is not a string", offset=_t.index('"model.a.bias"'))
_t = ('{"weight_map": {"model.a.weight": "' + SHARDS[0] + '", "model.a.bias": "' + SHARDS[0]
      + '", "model.b.weight": "' + SHARDS[1] + '", "model.a.weight": "' + SHARDS[1] + '"}}')
index_case("19-duplicate-key", _t, "duplicate key 'model.a.weight'",
           offset=_t.index('"model.a.weight"', _t.index('"model.a.weight"') + 1))


def shard_name_case(case_id: str, bad_name_fn: Callable[[Path], str], why: str):
    @case(case_id)
    def _(d: Path) -> Run:
        # The file the name points at exists and is a valid shard holding
        # model.b.weight: a reader that followed the name would succeed.
        outside = d / "elsewhere"
        outside.mkdir()
        (outside / SHARDS[1]).write_bytes(valid_blob({"model.b.weight": f16_matrix(8, 64, 3)}))
        (d / SHARDS[1]).write_bytes(valid_blob({"model.b.weight": f16_matrix(8, 64, 3)}))
        bad = bad_name_fn(d)
        text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[0],
                           "model.b.weight": bad})
        src = sharded(d, text)
        (src / "sub").mkdir()
        (src / "sub" / SHARDS[1]).write_bytes(valid_blob({"model.b.weight": f16_matrix(8, 64, 3)}))
        idx = src / "model.safetensors.index.json"
        return Run(src, [str(idx) + ": ", "tensor 'model.b.weight'", why,
                         byte(text.index('"model.b.weight"'))], watch=[outside])


shard_name_case("20-dotdot-path", lambda d: "../" + SHARDS[1], "contains a '/'")
shard_name_case("20-dotdot", lambda d: "..", "is '..'")
shard_name_case("20-absolute", lambda d: str(d / "elsewhere" / SHARDS[1]), "is an absolute path")
shard_name_case("20-separator", lambda d: "sub/" + SHARDS[1], "contains a '/'")
shard_name_case("20-backslash", lambda d: "sub\\" + SHARDS[1], "contains a '\\'")
shard_name_case("20-nul-byte", lambda d: SHARDS[1] + "\0.txt", "contains a NUL byte")
shard_name_case("20-empty-name", lambda d: "", "is empty")


@case("21-missing-shard")
def _(d: Path) -> Run:
    text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[0],
                       "model.b.weight": "model-00003-of-00003.safetensors"})
    src = sharded(d, text)
    idx = src / "model.safetensors.index.json"
    return Run(src, [str(idx) + ": ", "shard 'model-00003-of-00003.safetensors' does not exist",
                     byte(text.index('"model.b.weight"'))])


@case("21-shard-is-directory")
def _(d: Path) -> Run:
    text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[0],
                       "model.b.weight": "model-00003-of-00003.safetensors"})
    src = sharded(d, text)
    (src / "model-00003-of-00003.safetensors").mkdir()
    idx = src / "model.safetensors.index.json"
    return Run(src, [str(idx) + ": ", "shard 'model-00003-of-00003.safetensors'",
                     "not a regular file", byte(text.index('"model.b.weight"'))])


@case("22-listed-but-absent")
def _(d: Path) -> Run:
    text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[0],
                       "model.b.weight": SHARDS[1], "model.c.weight": SHARDS[1]})
    src = sharded(d, text)
    idx = src / "model.safetensors.index.json"
    return Run(src, [str(idx) + ": ", "tensor 'model.c.weight'", f"listed in shard '{SHARDS[1]}'",
                     "no shard holds it", byte(text.index('"model.c.weight"'))])


@case("22-listed-in-the-wrong-shard")
def _(d: Path) -> Run:
    text = index_json({"model.a.weight": SHARDS[0], "model.a.bias": SHARDS[1],
                       "model.b.weight": SHARDS[1]})
    src = sharded(d, text)
    idx = src / "model.safetensors.index.json"
    return Run(src, [str(idx) + ": ", "tensor 'model.a.bias'", f"it is in '{SHARDS[0]}'",
                     byte(text.index('"model.a.bias"'))])


@case("22-in-two-shards")
def _(d: Path) -> Run:
    src = sharded(d)
    blob = valid_blob({"model.b.weight": f16_matrix(8, 64, 3),
                       "model.a.bias": f16_matrix(1, 8, 2)[0]})
    (src / SHARDS[1]).write_bytes(blob)
    return Run(src, [str(src / SHARDS[1]) + ": ", "tensor 'model.a.bias'",
                     "present in two shards", byte(at(blob[8:], '"model.a.bias"'))])


@case("23-unlisted-tensor")
def _(d: Path) -> Run:
    src = sharded(d, extra={"model.extra.weight": f16_matrix(2, 64, 9)})
    blob = (src / SHARDS[0]).read_bytes()
    return Run(src, [str(src / SHARDS[0]) + ": ", "tensor 'model.extra.weight'",
                     "not listed in model.safetensors.index.json",
                     byte(at(blob[8:], '"model.extra.weight"'))])


# -- #34-#38 config file and rules -------------------------------------------------------
def config_case(case_id: str, text: str, *needles, line: int, column: Optional[int] = None,
                rc: int = 2, args: Sequence[str] = (), marks=()):
    @case(case_id, marks)
    def _(d: Path) -> Run:
        src, _f = model_dir(d, valid_blob(tiny_model()))
        cfg = d / "rules.toml"
        cfg.write_text(text)
        where = re.compile(re.escape(f"{cfg}:{line}") +
                           (f":{column}:" if column is not None else r"(?![0-9])"))
        return Run(src, [where, *needles], rc, args=["--config", str(cfg), *args], watch=[cfg])


config_case("34-invalid-toml", 'default = "int4"\ngroup_size = = 64\n', "invalid TOML", line=2)
config_case("34-unterminated-string", 'default = "int4\n', "invalid TOML", line=1)
config_case("34-duplicate-key", 'default = "int4"\ngroup_size = 64\ndefault = "int8"\n',
            "invalid TOML", line=3)
config_case("34-duplicate-table", '[[rule]]\nmatch = "lm_head"\nscheme = "fp16"\n[t]\na = 1\n[t]\n',
            "invalid TOML", line=6)
config_case("34-deep-dotted-keys", "x" + ".x" * 5000 + " = 1\n", "nested more than 64 levels",
            line=1, column=1 + 2 * 64 + 1)
config_case("34-deep-arrays", "x = " + "[" * 5000 + "]" * 5000 + "\n", "invalid TOML", line=1)
config_case("34-deep-inline-tables", "x = " + "{a=" * 5000 + "1" + "}" * 5000 + "\n",
            "invalid TOML", line=1)
config_case("35-typo-top-level", '# rules\ndefualt = "int4"\n', "unknown key 'defualt'",
            line=2, column=1)
config_case("35-typo-in-rule", '[[rule]]\nmatch = "lm_head"\nshceme = "fp16"\n',
            "unknown key 'shceme' in [[rule]]", line=3, column=1)
config_case("35-rule-without-scheme", 'default = "int8"\n\n[[rule]]\nmatch = "lm_head"\n',
            "[[rule]] without 'scheme'", line=3)
config_case("36-unknown-scheme", 'default = "int5"\n', "int5", line=1, column=11)
config_case("36-unknown-rule-scheme", '[[rule]]\nmatch = "*.up_proj"\nscheme = "int4-g100"\n',
            "int4-g100", line=3, column=10)
config_case("36-group-size-0", "group_size = 0\n", "group size must be 32, 64, 128 or 256, got 0",
            line=1, column=14)
config_case("36-group-size-negative", "group_size = -128\n", "got -128", line=1, column=14)
config_case("36-group-size-string", 'group_size = "128"\n', "'group_size' must be an integer",
            line=1, column=14)
config_case("37-invalid-regex", '[[rule]]\nmatch = "re:model\\\\.(layers"\nscheme = "int8"\n',
            "re:model", line=2, column=9)
config_case("37-invalid-regex-in-list", '[[rule]]\nmatch = ["lm_head", "re:[z-a]"]\n'
            'scheme = "int8"\n', "re:[z-a]", line=2, column=21)
config_case("38-no-match-strict", '[[rule]]\nmatch = "*.no_such_proj"\nscheme = "int8"\n',
            "rule", "*.no_such_proj", "matches no tensor", "[strict]", line=1, rc=1,
            args=["--strict"])
config_case("38-no-match-strict-in-file", 'strict = true\n\n[[rule]]\nmatch = "nothing"\n'
            'scheme = "int8"\n', "matches no tensor", line=3, rc=1)


def cli_case(case_id: str, args: Sequence[str], *needles, rc: int = 1,
             env: Optional[dict] = None, marks=()):
    @case(case_id, marks)
    def _(d: Path) -> Run:
        src, _f = model_dir(d, valid_blob(tiny_model()))
        return Run(src, list(needles), rc, args=list(args), env=dict(env or {}))


cli_case("36-unknown-scheme-cli", ["--scheme", "int5"], "--scheme", "int5")
cli_case("36-group-size-0-cli", ["--group-size", "0"], "--group-size", "got 0")
cli_case("36-group-size-negative-cli", ["--group-size", "-64"], "--group-size", "got -64")
cli_case("36-group-size-not-divisor-strict", ["--scheme", "int4-g256", "--strict"],
         "tensor 'model.layers.0.mlp.up_proj.weight'", "does not fit", "[strict]")
cli_case("37-invalid-regex-cli", ["--keep", "re:(lm_head"], "--keep", "re:(lm_head")
cli_case("37-invalid-regex-tensor-type", ["--tensor-type", "re:a{2,1}=int8"], "--tensor-type")
cli_case("38-no-match-strict-cli", ["--tensor-type", "*.nothing=int8", "--strict"],
         "--tensor-type", "*.nothing", "matches no tensor")
cli_case("41-threads-negative", ["--threads", "-1"], "--threads")
cli_case("41-threads-too-many", ["--threads", "100000"], "--threads")
cli_case("41-threads-not-a-number", ["--threads", "two"], "--threads")
cli_case("41-threads-0", ["--threads", "0"], "--threads", "0")


@case("existing-report-files-untouched")
def _(d: Path) -> Run:
    """A failing run leaves existing --report/--csv files as they were."""
    blob = valid_blob(tiny_model())
    src, f = model_dir(d, blob[:-1])  # one byte short: rejected
    rep, csv = d / "old.json", d / "old.csv"
    rep.write_text('{"keep": "me"}\n')
    csv.write_text("keep,me\n")
    return Run(src, [str(f)], 2, args=["--report", str(rep), "--csv", str(csv)],
               watch=[rep, csv])


@pytest.mark.parametrize("command", ["dequant", "report"])
@pytest.mark.parametrize("value", ["0", "-1", "1025"])
def test_threads_out_of_range_other_commands(command, value, tmp_path):
    """bad-inputs #41 for the other commands that take --threads."""
    src, _f = model_dir(tmp_path, valid_blob(tiny_model()))
    before = {src: snapshot(src)}
    out = tmp_path / "out"
    args = [command, src, out] if command == "dequant" else [command, src]
    r = nibble(*args, "--threads", value)
    check_rejected(r, 1, out, ["--threads", value], before)


def _isa_lacking() -> Tuple[str, str]:
    """(value for NIBBLE_ISA, phrase in the error): a path the CPU lacks, or
    a bogus name when it has them all."""
    if not NIBBLE or not Path(NIBBLE).is_file():
        return "bogus", "bogus"
    info = subprocess.run([NIBBLE, "info"], capture_output=True, text=True).stdout
    m = re.search(r"^supported isas: (.*)$", info, re.M)
    have = set(m.group(1).split()) if m else set()
    for isa in ("avx512", "avx2"):
        if isa not in have:
            return isa, "not supported by this CPU"
    return "bogus", "bogus"


_ISA, _ISA_WHY = _isa_lacking()
cli_case(f"41-NIBBLE_ISA={_ISA}", [], "NIBBLE_ISA", _ISA, _ISA_WHY, env={"NIBBLE_ISA": _ISA})
if _ISA != "bogus":
    cli_case(f"41-isa-option-{_ISA}", ["--isa", _ISA], "--isa", _ISA_WHY)
cli_case("41-isa-option-bogus", ["--isa", "sse9"], "--isa")


# -- #39 output path -----------------------------------------------------------------------
@case("39-out-is-the-input-file")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    return Run(f, ["is the input"], 1, out=f, out_existed=True)


@case("39-out-is-the-input-file-force")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    return Run(f, ["is the input"], 1, args=["--force"], out=f, out_existed=True)


@case("39-out-is-the-input-dir-force")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    return Run(src, ["is the input"], 1, args=["--force"], out=src, out_existed=True)


@case("39-out-contains-the-input-force")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    return Run(src, ["contains it"], 1, args=["--force"], out=d, out_existed=True)


@case("39-out-inside-the-input-via-symlink")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    (d / "link").symlink_to(src)
    return Run(src, ["inside it"], 1, out=d / "link" / "out")


@case("39-out-is-an-existing-file")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    (d / "out").write_text("precious\n")
    return Run(src, ["exists", "--force"], 1, watch=[d / "out"], out_existed=True)


# -- #40 output directory not writable ------------------------------------------------------
@case("40-parent-is-a-file")
def _(d: Path) -> Run:
    # As root, chmod does not make a directory unwritable; a parent that is a
    # regular file fails with ENOTDIR for everyone.
    src, f = model_dir(d, valid_blob(tiny_model()))
    (d / "plain").write_text("x")
    return Run(src, [str(d / "plain" / "out"), "Not a directory"], 3, out=d / "plain" / "out",
               watch=[d / "plain"], parent=d)


@case("40-parent-missing")
def _(d: Path) -> Run:
    src, f = model_dir(d, valid_blob(tiny_model()))
    return Run(src, [str(d / "nowhere"), "No such file or directory"], 3,
               out=d / "nowhere" / "out", parent=d)


# -- #42 not a checkpoint ------------------------------------------------------------------
@case("42-dir-without-safetensors")
def _(d: Path) -> Run:
    src = d / "in"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + bytes(60))
    return Run(src, [str(src) + ": ", "not a safetensors or GGUF checkpoint"])


@case("42-empty-dir")
def _(d: Path) -> Run:
    src = d / "in"
    src.mkdir()
    return Run(src, [str(src) + ": ", "not a safetensors or GGUF checkpoint"])


@case("42-zip-file")
def _(d: Path) -> Run:
    f = d / "pytorch_model.bin"
    f.write_bytes(b"PK\x03\x04" + bytes(200))
    return Run(f, [str(f) + ": ", "not a safetensors or GGUF checkpoint"])


@case("42-text-file")
def _(d: Path) -> Run:
    f = d / "README.md"
    f.write_text("# a model card, not a model\n" * 4)
    return Run(f, [str(f) + ": ", "not a safetensors or GGUF checkpoint"])


@case("42-gguf-file")
def _(d: Path) -> Run:
    f = d / "model.gguf"
    f.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    return Run(f, [str(f) + ": ", "GGUF"], 1)


@case("42-fifo")
def _(d: Path) -> Run:
    f = d / "model.safetensors"
    os.mkfifo(f)
    return Run(f, [str(f), "not a"], 2)


def _case_param(c):
    case_id, fn, marks = c
    return pytest.param(fn, id=case_id, marks=marks)


@pytest.mark.parametrize("build", [_case_param(c) for c in CASES])
def test_rejected(build, tmp_path):
    run = build(tmp_path)
    out = run.out or tmp_path / "out"
    watched = [run.input, *run.watch]
    if run.input.parent == tmp_path / "in":
        watched.append(run.input.parent)
    before = {p: snapshot(p) for p in watched if os.path.lexists(p)}
    if run.out_existed:
        before[out] = snapshot(out)
    r = nibble("convert", run.input, out, *run.args, env=run.env)
    check_rejected(r, run.rc, out, run.needles, before, out_existed=run.out_existed,
                   parent=run.parent)


@pytest.mark.parametrize("case_id", sorted(NOT_UTF8_HEADERS))
def test_error_line_is_utf8(case_id, tmp_path):
    src, f = model_dir(tmp_path, st_blob(NOT_UTF8_HEADERS[case_id], b"ab"))
    r = nibble("convert", src, tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert_utf8(r)
    # The offending byte is shown escaped, not dropped.
    bad = re.search(rb"[\x80-\xff]", NOT_UTF8_HEADERS[case_id]).group(0)
    assert "\\x%02x" % bad[0] in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# Accepted inputs: #14 zero-element tensors, #15 scalars / 1-D / every dtype,
# #17 FP16 extremes, #20 symlinked shards, and warnings that are not errors.


def read_header(path: Path) -> Tuple[dict, int]:
    """The output's header and data start, read without nibble's code."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def raw_tensors(path: Path) -> Dict[str, Tuple[str, List[int], bytes]]:
    header, start = read_header(path)
    blob = path.read_bytes()
    out = {}
    for k, v in header.items():
        if k != "__metadata__":
            begin, end = v["data_offsets"]
            out[k] = (v["dtype"], v["shape"], blob[start + begin:start + end])
    return out


def convert_ok(src: Path, out: Path, report: Path, *args) -> Dict[str, dict]:
    r = nibble("convert", src, out, "--report", report, "--quiet", *args)
    assert r.returncode == 0, r.stderr
    assert leftovers(out.parent) == []
    return {row["name"]: row for row in json.loads(report.read_text())["tensors"]}


def test_14_zero_element_tensors_copied(tmp_path):
    model = {"model.layers.0.mlp.up_proj.weight": f16_matrix(16, 128, 1)}
    empty = {"model.layers.0.mlp.down_proj.weight": ("F16", [0, 128]),
             "model.layers.0.self_attn.o_proj.weight": ("F16", [16, 0]),
             "model.layers.0.mlp.up_proj.bias": ("F32", [0]),
             "model.extra": ("BF16", [2, 0, 3])}
    blob = valid_blob(model)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    end = header["model.layers.0.mlp.up_proj.weight"]["data_offsets"][1]
    for name, (code, shape) in empty.items():
        header[name] = entry(code, shape, end, end)     # empty ranges at the end
    # ... and one at the very start, before the first non-empty tensor.
    header = {"model.first_empty": entry("F16", [0], 0, 0), **header}
    src, f = model_dir(tmp_path, st_blob(header, blob[8 + n:]))
    before = snapshot(src)
    out = tmp_path / "out"
    rows = convert_ok(src, out, tmp_path / "r.json", "--scheme", "int4-g32")
    assert snapshot(src) == before
    stored = raw_tensors(out / "model.safetensors")
    for name, (code, shape) in [*empty.items(), ("model.first_empty", ("F16", [0]))]:
        assert rows[name]["scheme"] == "keep", rows[name]
        assert stored[name] == (code, shape, b""), name
        assert name[: -len(".weight")] + ".weight_packed" not in stored
    assert rows["model.layers.0.mlp.up_proj.weight"]["scheme"] == "int4-g32"
    with safe_open(str(out / "model.safetensors"), framework="numpy") as sf:
        assert sf.get_tensor("model.layers.0.mlp.down_proj.weight").shape == (0, 128)
        assert sf.get_tensor("model.layers.0.self_attn.o_proj.weight").shape == (16, 0)
        assert sf.get_tensor("model.layers.0.mlp.up_proj.bias").shape == (0,)
        assert sf.get_slice("model.extra").get_shape() == [2, 0, 3]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    # Kept 2-D weights are listed as unquantized for the loaders.
    assert "model.layers.0.mlp.down_proj" in qc["ignore"]
    assert "model.layers.0.self_attn.o_proj" in qc["ignore"]


def test_15_scalars_1d_and_every_dtype_copied(tmp_path):
    rng = np.random.default_rng(15)
    weight = f16_matrix(16, 128, 1)
    header: dict = {"__metadata__": {"format": "pt", "note": "hand written"}}
    data = b""

    def add(name, code, shape, raw):
        nonlocal data
        header[name] = entry(code, shape, len(data), len(data) + len(raw))
        data += raw

    add("model.layers.0.mlp.up_proj.weight", "F16", [16, 128], weight.tobytes())
    add("model.scale", "F32", [], struct.pack("<f", 3.5))                    # scalar
    add("model.step", "I64", [], struct.pack("<q", -7))                      # integer scalar
    add("model.norm.weight", "F16", [128], f16_matrix(1, 128, 2).tobytes())  # 1-D float
    add("model.layers.0.mlp.up_proj.bias", "BF16", [16],
        ctd.f32_to_bf16_bits(rng.standard_normal(16).astype(np.float32)).tobytes())
    add("model.mask", "BOOL", [5], bytes([1, 0, 1, 1, 0]))
    for code, size in DSIZE.items():                                         # 1-D of each dtype
        if code == "BOOL":
            raw = bytes(rng.integers(0, 2, 6, dtype=np.uint8))
        elif code.startswith("F8"):
            raw = bytes(rng.integers(0, 0x78, 6, dtype=np.uint8))            # finite codes
        elif code in ("F64", "F32", "F16", "BF16", "C64"):
            raw = rng.standard_normal(6 * size // 2).astype(np.float16).tobytes()
        else:
            raw = bytes(rng.integers(0, 256, 6 * size, dtype=np.uint8))
        add(f"extra.{code}", code, [6], raw)
    for code, bits in (("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6)):          # sub-byte floats
        add(f"extra.{code}", code, [4], bytes(rng.integers(0, 255, 4 * bits // 8,
                                                           dtype=np.uint8)))
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-(8 + len(text)) % 8)
    src, f = model_dir(tmp_path, st_blob(text, data))
    original = raw_tensors(f)
    out = tmp_path / "out"
    rows = convert_ok(src, out, tmp_path / "r.json", "--scheme", "int8")
    stored = raw_tensors(out / "model.safetensors")
    for name, value in original.items():
        if name == "model.layers.0.mlp.up_proj.weight":
            assert rows[name]["scheme"] == "int8"
            continue
        assert rows[name]["scheme"] == "keep", rows[name]
        assert stored[name] == value, name        # dtype, shape and bytes
    with safe_open(str(out / "model.safetensors"), framework="numpy") as sf:
        assert set(sf.keys()) == set(stored)
        scalar = sf.get_tensor("model.scale")
        assert scalar.shape == () and scalar.dtype == np.float32 and float(scalar) == 3.5
        assert sf.get_tensor("model.step").shape == () and int(sf.get_tensor("model.step")) == -7
        for name in ("model.norm.weight", "extra.F64", "extra.I16", "extra.U32", "extra.C64"):
            got = sf.get_tensor(name)
            assert got.tobytes() == original[name][2] and list(got.shape) == original[name][1]
        for name in ("extra.F8_E4M3", "extra.F4", "extra.F6_E3M2"):
            assert sf.get_slice(name).get_dtype() == name.split(".", 1)[1]


def _special_f16() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(17)
    # Only subnormals (2^-24 .. 1023 x 2^-24), both signs.
    k = rng.integers(1, 1024, (8, 128)) * np.where(rng.random((8, 128)) < 0.5, -1, 1)
    sub = (k * 2.0 ** -24).astype(np.float16)
    sub[0, 0] = np.float16(2.0 ** -24)
    big = f16_matrix(8, 128, 5).astype(np.float32)
    big[0, :] = 65504
    big[1, :] = -65504
    big[2, ::2], big[2, 1::2] = 65504, -65504
    big[3, 5], big[4, 7] = 65504, -65504
    zero = f16_matrix(8, 128, 6)
    zero[0] = 0
    zero[3] = 0
    zero[7] = np.float16(-0.0)
    return {"model.layers.0.mlp.up_proj.weight": sub,
            "model.layers.0.mlp.down_proj.weight": big.astype(np.float16),
            "model.layers.0.self_attn.o_proj.weight": zero}


@pytest.mark.parametrize("scheme", ["int8", "int4-g32", "int4-g128-asym"])
def test_17_fp16_subnormals_extremes_zero_rows(scheme, tmp_path):
    model = _special_f16()
    src, f = model_dir(tmp_path, valid_blob(model))
    out = tmp_path / "out"
    rows = convert_ok(src, out, tmp_path / "r.json", "--scheme", scheme)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    decoded = ctd.decode_tensors(ctd.read_model(out), qc, "f32")
    for name, x in model.items():
        row = rows[name]
        assert row["scheme"] == scheme, row
        y = decoded[name].array.astype(np.float64)
        err = y - x.astype(np.float64)
        assert np.all(np.isfinite(y)), name
        rmse = float(np.sqrt(np.mean(err * err)))
        assert abs(rmse - row["rmse"]) <= 1e-5 * row["rmse"] + 1e-12, (name, rmse, row)
        assert float(np.max(np.abs(err))) <= row["max_abs_error"] * (1 + 1e-6) + 1e-12
    # All-zero rows come back exactly zero; subnormals are not flushed away
    # (a scale of 0 would decode every one of them to 0).
    zero = decoded["model.layers.0.self_attn.o_proj.weight"].array
    assert not np.any(zero[[0, 3, 7]])
    sub = decoded["model.layers.0.mlp.up_proj.weight"].array
    assert np.count_nonzero(sub) > sub.size // 2
    assert rows["model.layers.0.mlp.up_proj.weight"]["cosine"] > 0.9


@pytest.mark.parametrize("scheme", ["int8", "int4-g32"])
def test_17_fp16_extremes_decode_finite_in_f16(scheme, tmp_path):
    model = _special_f16()
    src, f = model_dir(tmp_path, valid_blob(model))
    out = tmp_path / "out"
    convert_ok(src, out, tmp_path / "r.json", "--scheme", scheme)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    with np.errstate(over="ignore"):
        decoded = ctd.decode_tensors(ctd.read_model(out), qc, "f16")
    big = decoded["model.layers.0.mlp.down_proj.weight"].array
    assert np.all(np.isfinite(big)), f"{np.count_nonzero(~np.isfinite(big))} weights decode to Inf"


def test_20_symlinked_shards_accepted(tmp_path):
    """The Hugging Face cache layout: snapshots/<rev>/<shard> -> ../../blobs/<hash>."""
    src = sharded(tmp_path)
    cache = tmp_path / "hub"
    snap = cache / "snapshots" / "abc123"
    (cache / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        (cache / "blobs" / digest).write_bytes(p.read_bytes())
        (snap / p.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    before = snapshot(cache)
    out = tmp_path / "out"
    rows = convert_ok(snap, out, tmp_path / "r.json", "--scheme", "int4-g32")
    assert snapshot(cache) == before
    assert rows["model.a.weight"]["scheme"] == "int4-g32"
    assert raw_tensors(out / "model.safetensors")["model.a.bias"] == \
        raw_tensors(src / SHARDS[0])["model.a.bias"]
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_header_whitespace_accepted(tmp_path):
    """The reference reader accepts whitespace around the JSON object."""
    m = tiny_model()
    blob = valid_blob(m)
    (n,) = struct.unpack("<Q", blob[:8])
    text = b"\n\t " + blob[8:8 + n].rstrip() + b" \r\n" + b" " * 5
    src, f = model_dir(tmp_path, st_blob(text, blob[8 + n:]))
    rows = convert_ok(src, tmp_path / "out", tmp_path / "r.json")
    assert set(rows) == set(m)


@pytest.mark.parametrize("what", ["37-pathological-regex", "38-no-match-warns",
                                  "36-not-divisor-warns"])
def test_warned_not_rejected(what, tmp_path):
    """Without --strict these are one warning each and a normal conversion."""
    m = tiny_model()
    args: List[str] = ["--scheme", "int4-g32"]
    if what == "37-pathological-regex":
        # RE2 matches in linear time: no hang, no stack overflow on a long name.
        m["a" * 60000 + ".weight"] = f16_matrix(1, 8, 9).reshape(8)
        args += ["--tensor-type", "re:(a*)*b=int8", "--tensor-type", "re:(a|aa)*$=int8"]
        warn = "rule --tensor-type (re:(a*)*b -> int8) matches no tensor"
    elif what == "38-no-match-warns":
        args += ["--keep", "*.no_such_proj"]
        warn = "rule --keep (*.no_such_proj -> keep) matches no tensor"
    else:
        args = ["--scheme", "int4-g256"]
        warn = ("tensor 'model.layers.0.mlp.up_proj.weight' [16, 128]: int4-g256 does not fit: "
                "column count 128 is not a multiple of the group size 256")
    src, f = model_dir(tmp_path, valid_blob(m))
    out = tmp_path / "out"
    r = nibble("convert", src, out, "--report", tmp_path / "r.json", "--quiet", *args,
               timeout=60)
    assert r.returncode == 0, r.stderr
    assert any(l.startswith("nibble: warning: ") and warn in l for l in r.stderr.splitlines()), \
        r.stderr
    assert not [l for l in r.stderr.splitlines() if not l.startswith("nibble: warning: ")]
    assert (out / "model.safetensors").is_file()
    rows = {row["name"]: row for row in json.loads((tmp_path / "r.json").read_text())["tensors"]}
    if what == "36-not-divisor-warns":
        assert rows["model.layers.0.mlp.up_proj.weight"]["scheme"] == "keep"


# ---------------------------------------------------------------------------
# #18 the input truncated while nibble runs.


def write_big_f16(path: Path, n_tensors: int, rows: int, cols: int,
                  prefix: str = "up_proj") -> List[str]:
    """n_tensors [rows, cols] F16 weights (finite, heavy-tailed), written
    with the safetensors layout one tensor at a time."""
    pool = (np.random.default_rng(18).standard_t(4, 1 << 20) * 0.02).astype(np.float16)
    names = [f"model.layers.{i}.mlp.{prefix}.weight" for i in range(n_tensors)]
    nbytes = rows * cols * 2
    header = {n: entry("F16", [rows, cols], i * nbytes, (i + 1) * nbytes)
              for i, n in enumerate(names)}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    block = np.resize(pool, rows * cols)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(n_tensors):
            np.roll(block, 4099 * i).tofile(f)
    return names


def wait_for_temp(proc: subprocess.Popen, parent: Path, name: str, limit: float = 60) -> Path:
    """Polls every 5 ms until .NAME.nibble-tmp-PID-RANDOM appears next to OUT."""
    t0 = time.monotonic()
    while True:
        found = sorted(parent.glob(f".{name}.nibble-tmp-{proc.pid}-*"))
        if found:
            return found[0]
        assert proc.poll() is None, (
            f"nibble exited (rc {proc.returncode}) before its temporary directory appeared: "
            f"{proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
        assert time.monotonic() - t0 < limit, "no temporary directory"
        time.sleep(0.005)


def test_18_input_truncated_while_running(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    f = src / "model.safetensors"
    # 4 x 32 MB: about 2 s on the scalar path with one thread, so the
    # truncation lands while the first tensor is being read.
    names = write_big_f16(f, 4, 4096, 4096)
    (n,) = struct.unpack("<Q", f.read_bytes()[:8])
    out = tmp_path / "out"
    proc = subprocess.Popen([NIBBLE, "convert", str(src), str(out), "--scheme", "int4",
                             "--isa", "scalar", "--threads", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_temp(proc, tmp_path, "out")
        os.truncate(f, 8 + n + 4096)   # the header and one page of data remain
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = stderr.decode("utf-8", "surrogateescape")
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {err}"
    assert proc.returncode != 0, "the conversion succeeded on a truncated input"
    assert proc.returncode in (2, 3), f"rc {proc.returncode}: {err}"
    line = error_line(err)
    assert str(f) in line, line
    # SIGBUS (the pages vanished under the mapping) or the size re-check
    # between tensors; either way the tensor is named.
    assert any(f"tensor '{t}'" in line for t in names) or "shrank" in line, line
    assert not os.path.lexists(out)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# #40 output not writable, disk full.


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "nibble-test", str(where)],
                       capture_output=True)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True)


def _kept_model(d: Path, mb: int) -> Tuple[Path, Path]:
    """A model whose output is about `mb` MB (lm_head is kept)."""
    m = tiny_model()
    m["lm_head.weight"] = np.resize(f16_matrix(64, 512, 4), (mb * 1024, 512))
    return model_dir(d, valid_blob(m))


def test_40_output_directory_read_only(tmp_path):
    src, f = model_dir(tmp_path, valid_blob(tiny_model()))
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "ro,size=1m")
    try:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without mount(2): chmod cannot make a directory unwritable")
            ro.chmod(0o555)
        before = snapshot(src)
        out = ro / "out"
        r = nibble("convert", src, out)
        check_rejected(r, 3, out, [str(ro / ".out.nibble-tmp-"),
                                   "Read-only file system" if mounted else "Permission denied"],
                       {src: before})
    finally:
        if mounted:
            _umount(ro)
        else:
            ro.chmod(0o755)


def test_40_disk_full(tmp_path):
    """ENOSPC on a 1 MB tmpfs (root), or EFBIG from RLIMIT_FSIZE (anyone)."""
    src, f = _kept_model(tmp_path, 2)
    small = tmp_path / "small"
    mounted = _mount_tmpfs(small, "size=1m")
    try:
        before = snapshot(src)
        out = small / "out"
        preexec = None
        if not mounted:
            preexec = _fsize_limit(1 << 20)
        r = nibble("convert", src, out, "--scheme", "int4-g32", preexec=preexec)
        check_rejected(r, 3, out, [str(small / ".out.nibble-tmp-"),
                                   "No space left on device" if mounted else "File too large"],
                       {src: before})
        assert list(small.iterdir()) == []
    finally:
        if mounted:
            _umount(small)


def _fsize_limit(limit: int) -> Callable[[], None]:
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_40_file_size_limit(tmp_path):
    """A write that fails half way (EFBIG): one error, the temporaries gone."""
    src, f = _kept_model(tmp_path, 2)
    before = snapshot(src)
    out = tmp_path / "out"
    r = nibble("convert", src, out, "--scheme", "int4-g32", preexec=_fsize_limit(1 << 20))
    check_rejected(r, 3, out, [str(tmp_path / ".out.nibble-tmp-"), "File too large"],
                   {src: before})
