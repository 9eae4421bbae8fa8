#!/usr/bin/env python3
"""Independent numpy decoder of compressed-tensors `pack-quantized` checkpoints.

Written from the layout in shared/docs/formats.md and checked against the
compressed-tensors package's pack_to_int32/unpack_from_int32, with no code
shared with nibble, so that tests can compare `nibble dequant` with it bit
for bit.

    python scripts/ct_decode.py IN_DIR OUT.safetensors [--dtype f32|f16|bf16]

IN_DIR is a model directory (model.safetensors, or shards listed in
model.safetensors.index.json, or a single other *.safetensors file) whose
config.json has a `quantization_config`. The output is one plain safetensors
file: every quantized layer `P` becomes `P.weight` (dequantized), every other
floating-point tensor is converted to --dtype (round to nearest even), and
integer/bool/other tensors are copied unchanged (--keep-dtypes copies floats
unchanged too).

Layout (per quantized layer P with weight [out, in], bits = 4 or 8):
  P.weight_packed      I32 [out, ceil(in*bits/32)]: code q (signed) stored as
                       u = q + 2^(bits-1); element pf*j + i (pf = 32/bits) sits
                       at bits [bits*i, bits*i + bits) of word j; padding is 0.
  P.weight_scale       F16/BF16/F32 [out, ceil(in/group)] (group) or [out, 1]
                       (channel).
  P.weight_zero_point  I32 [ceil(out/pf), n_groups], asymmetric only: zero
                       points offset like the codes, packed pf per word along
                       dim 0 (out). formats.md spells this out for 4 bits
                       (8 per word); for 8 bits we follow compressed-tensors'
                       pack_to_int32(packed_dim=0), whose pack factor is
                       32 // num_bits: 4 per word, offset +128. That choice
                       lives in zero_point_pack_factor() only.
  P.weight_shape       I64 [2] = [out, in].
Dequantize: symmetric w = q * scale, asymmetric w = (q - zp) * scale.

Arithmetic: float32. (q - zp) has at most 9 significant bits and the scale at
most 11 (F16) or 8 (BF16), so the float32 product is exact and the single
rounding to --dtype gives the same bits as compressed-tensors computing in the
scale's dtype (it multiplies in that dtype, which also rounds once).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

# safetensors dtype code -> (numpy dtype or None when numpy/safetensors' numpy
# loader cannot represent it, element size in bytes, TensorSpec dtype name).
ST_DTYPES = {
    "F64": (np.float64, 8, "float64"),
    "F32": (np.float32, 4, "float32"),
    "F16": (np.float16, 2, "float16"),
    "BF16": (None, 2, "bfloat16"),
    "I64": (np.int64, 8, "int64"),
    "I32": (np.int32, 4, "int32"),
    "I16": (np.int16, 2, "int16"),
    "I8": (np.int8, 1, "int8"),
    "U64": (np.uint64, 8, "uint64"),
    "U32": (np.uint32, 4, "uint32"),
    "U16": (np.uint16, 2, "uint16"),
    "U8": (np.uint8, 1, "uint8"),
    "BOOL": (np.bool_, 1, "bool"),
    "F8_E4M3": (None, 1, "float8_e4m3fn"),
    "F8_E5M2": (None, 1, "float8_e5m2"),
    "F8_E4M3FNUZ": (None, 1, "float8_e4m3fnuz"),
    "F8_E5M2FNUZ": (None, 1, "float8_e5m2fnuz"),
    "F8_E8M0": (None, 1, "float8_e8m0fnu"),
    "C64": (np.complex64, 8, "complex64"),
}
FLOAT_CODES = ("F64", "F32", "F16", "BF16")
OUT_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


class CtFormatError(ValueError):
    """The checkpoint does not follow the compressed-tensors layout."""


# ---------------------------------------------------------------------------
# Raw tensors: a numpy array plus its safetensors dtype code. BF16 (and the
# 8-bit floats) are carried as their raw unsigned integers, because numpy has
# no such dtype and safetensors' numpy loader (0.8.0) rejects them.


class Raw:
    __slots__ = ("code", "array")

    def __init__(self, code: str, array: np.ndarray):
        self.code = code
        self.array = array

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    def __repr__(self) -> str:
        return f"Raw({self.code}, {self.shape})"


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bits, round to nearest even; NaN stays a quiet NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def to_f32(raw: Raw) -> np.ndarray:
    if raw.code == "BF16":
        return bf16_bits_to_f32(raw.array)
    if raw.code in ("F16", "F32", "F64"):
        return raw.array.astype(np.float32)
    raise CtFormatError(f"expected a floating-point tensor, got {raw.code}")


def from_f32(x: np.ndarray, code: str) -> Raw:
    if code == "F32":
        return Raw("F32", np.ascontiguousarray(x, dtype=np.float32))
    if code == "F16":
        return Raw("F16", x.astype(np.float16))  # numpy rounds to nearest even
    if code == "BF16":
        return Raw("BF16", f32_to_bf16_bits(x))
    raise ValueError(f"unsupported output dtype {code}")


# ---------------------------------------------------------------------------
# Reading: safetensors' safe_open for every dtype numpy knows; for the others
# the raw bytes at the offsets of the header (which safe_open has validated).


def _header(path: Path) -> Tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def read_safetensors(path: Path, names: Optional[Iterable[str]] = None) -> Dict[str, Raw]:
    from safetensors import safe_open

    header, data_start = _header(path)
    out: Dict[str, Raw] = {}
    with safe_open(str(path), framework="numpy") as f:
        keys = list(f.keys()) if names is None else list(names)
        for name in keys:
            sl = f.get_slice(name)
            code = sl.get_dtype()
            shape = tuple(sl.get_shape())
            if code not in ST_DTYPES:
                raise CtFormatError(f"{path}: {name}: dtype {code} not handled")
            np_dtype, size, _ = ST_DTYPES[code]
            if np_dtype is not None:
                arr = f.get_tensor(name)
            else:
                begin, end = header[name]["data_offsets"]
                carrier = np.uint16 if size == 2 else np.uint8
                arr = np.fromfile(path, dtype=carrier, count=(end - begin) // size,
                                  offset=data_start + begin).reshape(shape)
            out[name] = Raw(code, arr)
    return out


def model_files(model: Path) -> Dict[str, Path]:
    """Tensor name -> file, for a model directory or a single file."""
    model = Path(model)
    if model.is_file():
        from safetensors import safe_open
        with safe_open(str(model), framework="numpy") as f:
            return {k: model for k in f.keys()}
    index = model / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        for shard in set(weight_map.values()):
            if os.path.isabs(shard) or "/" in shard or "\\" in shard or shard in (".", ".."):
                raise CtFormatError(f"{index}: shard name {shard!r} is not a file name")
        return {name: model / shard for name, shard in weight_map.items()}
    single = model / "model.safetensors"
    files = [single] if single.exists() else sorted(model.glob("*.safetensors"))
    if len(files) != 1:
        raise CtFormatError(f"{model}: expected model.safetensors or an index, found {len(files)} files")
    return model_files(files[0])


def read_model(model: Path) -> Dict[str, Raw]:
    by_file: Dict[Path, List[str]] = {}
    for name, path in model_files(model).items():
        by_file.setdefault(path, []).append(name)
    tensors: Dict[str, Raw] = {}
    for path, names in by_file.items():
        tensors.update(read_safetensors(path, names))
    return tensors


# ---------------------------------------------------------------------------
# The layout.


def pack_factor(bits: int) -> int:
    if bits not in (4, 8):
        raise CtFormatError(f"num_bits {bits} is not 4 or 8")
    return 32 // bits


def zero_point_pack_factor(bits: int) -> int:
    """Zero points per int32 word along dim 0.

    4 bits: 8 per word (formats.md). 8 bits: formats.md is silent; this follows
    compressed-tensors' pack_to_int32(zero_point, num_bits, packed_dim=0),
    which packs 32 // num_bits = 4 per word with the same +128 offset.
    """
    return pack_factor(bits)


def unpack_words(words: np.ndarray, bits: int, count: int, axis: int) -> np.ndarray:
    """Unpacks `count` signed codes along `axis` (0 or 1) of an I32 array."""
    pf = pack_factor(bits)
    u = np.ascontiguousarray(words).view(np.uint32)
    if axis == 0:
        return unpack_words(u.T, bits, count, 1).T
    if u.ndim != 2 or u.shape[1] != -(-count // pf):
        raise CtFormatError(f"packed shape {u.shape} does not hold {count} {bits}-bit codes per row")
    shifts = (np.arange(pf, dtype=np.uint32) * np.uint32(bits))
    fields = (u[:, :, None] >> shifts) & np.uint32((1 << bits) - 1)
    fields = fields.reshape(u.shape[0], -1)
    if np.any(fields[:, count:]):
        raise CtFormatError("padding bits after the last code are not zero")
    return fields[:, :count].astype(np.int32) - (1 << (bits - 1))


def dequantize_layer(packed: np.ndarray, scale: Raw, shape: Tuple[int, int], bits: int,
                     zero_point: Optional[np.ndarray] = None,
                     group_size: Optional[int] = None) -> np.ndarray:
    """Returns the float32 weight [out, in] of one quantized layer.

    group_size None means channel strategy (scale [out, 1]).
    """
    out_dim, in_dim = shape
    if packed.dtype != np.int32:
        raise CtFormatError(f"weight_packed is {packed.dtype}, expected int32")
    if packed.shape[0] != out_dim:
        raise CtFormatError(f"weight_packed has {packed.shape[0]} rows, weight_shape says {out_dim}")
    q = unpack_words(packed, bits, in_dim, axis=1)
    n_groups = 1 if group_size is None else -(-in_dim // group_size)
    if scale.shape != (out_dim, n_groups):
        raise CtFormatError(f"weight_scale shape {scale.shape}, expected {(out_dim, n_groups)}")
    s = to_f32(scale)
    if zero_point is not None:
        zpf = zero_point_pack_factor(bits)
        want = (-(-out_dim // zpf), n_groups)
        if zero_point.dtype != np.int32 or zero_point.shape != want:
            raise CtFormatError(f"weight_zero_point {zero_point.dtype} {zero_point.shape}, expected int32 {want}")
        zp = unpack_words(zero_point, bits, out_dim, axis=0)
        q = q - (zp if group_size is None else np.repeat(zp, group_size, axis=1)[:, :in_dim])
    s_full = s if group_size is None else np.repeat(s, group_size, axis=1)[:, :in_dim]
    return q.astype(np.float32) * s_full


# ---------------------------------------------------------------------------
# quantization_config: which scheme applies to a layer.


def _matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


def scheme_for(module: str, qconfig: dict, class_name: str = "Linear") -> Optional[dict]:
    """The `weights` args of the config group that targets `module`, or None
    when `module` is ignored or matched by no group. Precedence as in vLLM:
    exact name, then regular expression, then class name."""
    if any(_matches(module, t) for t in qconfig.get("ignore") or []):
        return None
    best = None
    for group in (qconfig.get("config_groups") or {}).values():
        for target in group.get("targets") or []:
            rank = (0 if target == module else
                    1 if target.startswith("re:") and _matches(module, target) else
                    2 if target == class_name else None)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, group.get("weights"))
    return None if best is None else best[1]


def check_qconfig(qconfig: dict) -> None:
    if qconfig.get("quant_method") != "compressed-tensors":
        raise CtFormatError(f"quant_method {qconfig.get('quant_method')!r}, expected 'compressed-tensors'")
    if qconfig.get("format") != "pack-quantized":
        raise CtFormatError(f"format {qconfig.get('format')!r}, expected 'pack-quantized'")
    for gname, group in (qconfig.get("config_groups") or {}).items():
        w = group.get("weights") or {}
        if w.get("type", "int") != "int" or w.get("num_bits") not in (4, 8):
            raise CtFormatError(f"{gname}: weights must be int with num_bits 4 or 8: {w}")
        if w.get("strategy") not in ("group", "channel"):
            raise CtFormatError(f"{gname}: strategy {w.get('strategy')!r} is not group or channel")
        if w.get("strategy") == "group" and not (isinstance(w.get("group_size"), int) and w["group_size"] > 0):
            raise CtFormatError(f"{gname}: group strategy needs a positive group_size")


# ---------------------------------------------------------------------------
# The whole model.


def decode_tensors(tensors: Dict[str, Raw], qconfig: dict, dtype: str = "f32",
                   keep_dtypes: bool = False) -> Dict[str, Raw]:
    """Dequantizes every `P.weight_packed` layer; returns plain tensors."""
    check_qconfig(qconfig)
    code = OUT_DTYPES[dtype]
    modules = sorted({n[: -len(".weight_packed")] for n in tensors if n.endswith(".weight_packed")})
    out: Dict[str, Raw] = {}
    used = set()
    for p in modules:
        args = scheme_for(p, qconfig)
        if args is None:
            raise CtFormatError(f"{p}: stored packed but ignored or matched by no config group")
        for part in ("weight_packed", "weight_scale", "weight_shape"):
            if f"{p}.{part}" not in tensors:
                raise CtFormatError(f"{p}: missing {p}.{part}")
        if f"{p}.weight" in tensors:
            raise CtFormatError(f"{p}: both {p}.weight and {p}.weight_packed present")
        shape_t = tensors[f"{p}.weight_shape"]
        if shape_t.code not in ("I64", "I32") or shape_t.shape != (2,):
            raise CtFormatError(f"{p}.weight_shape is {shape_t.code} {shape_t.shape}, expected I64 [2]")
        shape = tuple(int(v) for v in shape_t.array)
        packed = tensors[f"{p}.weight_packed"]
        if packed.code != "I32":
            raise CtFormatError(f"{p}.weight_packed is {packed.code}, expected I32")
        zp_name = f"{p}.weight_zero_point"
        symmetric = bool(args.get("symmetric", True))
        if symmetric and zp_name in tensors:
            raise CtFormatError(f"{p}: symmetric scheme but {zp_name} present")
        if not symmetric and zp_name not in tensors:
            raise CtFormatError(f"{p}: asymmetric scheme but {zp_name} missing")
        zp = None if symmetric else tensors[zp_name].array
        group = args["group_size"] if args["strategy"] == "group" else None
        try:
            w = dequantize_layer(packed.array, tensors[f"{p}.weight_scale"], shape,
                                 int(args["num_bits"]), zp, group)
        except CtFormatError as e:
            raise CtFormatError(f"{p}: {e}") from None
        out[f"{p}.weight"] = from_f32(w, code)
        used.update(f"{p}.{s}" for s in SUFFIXES)
    for name, raw in tensors.items():
        if name in used:
            continue
        if name.rsplit(".", 1)[-1] in SUFFIXES:
            raise CtFormatError(f"{name}: a compressed-tensors part without {name.rsplit('.', 1)[0]}.weight_packed")
        if raw.code in FLOAT_CODES and not keep_dtypes and raw.code != code:
            out[name] = from_f32(to_f32(raw), code)
        else:
            out[name] = raw
    return out


def load_qconfig(model: Path) -> dict:
    cfg_path = (Path(model).parent if Path(model).is_file() else Path(model)) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if "quantization_config" not in cfg:
        raise CtFormatError(f"{cfg_path}: no quantization_config")
    return cfg["quantization_config"]


def decode_model(model: Path, dtype: str = "f32", keep_dtypes: bool = False) -> Dict[str, Raw]:
    return decode_tensors(read_model(model), load_qconfig(model), dtype, keep_dtypes)


def write_safetensors(tensors: Dict[str, Raw], path: Path,
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes with the safetensors package (temporary file + rename)."""
    from safetensors import TensorSpec, serialize_file

    keep = {}
    specs = {}
    for name, raw in tensors.items():
        arr = np.ascontiguousarray(raw.array)
        keep[name] = arr
        specs[name] = TensorSpec(dtype=ST_DTYPES[raw.code][2], shape=list(arr.shape),
                                 data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        serialize_file(specs, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    del keep


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path, help="model directory (or one .safetensors file)")
    ap.add_argument("output", type=Path, help="output .safetensors file")
    ap.add_argument("--dtype", choices=sorted(OUT_DTYPES), default="f32")
    ap.add_argument("--keep-dtypes", action="store_true",
                    help="copy unquantized floating-point tensors unchanged")
    args = ap.parse_args(argv)
    from safetensors import SafetensorError
    try:
        tensors = decode_model(args.input, args.dtype, args.keep_dtypes)
    except (CtFormatError, SafetensorError, KeyError, OSError, json.JSONDecodeError) as e:
        print(f"ct_decode: {args.input}: {e}", file=sys.stderr)
        return 2
    write_safetensors(tensors, args.output, {"format": "pt"})
    print(f"ct_decode: wrote {len(tensors)} tensors to {args.output} ({args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
