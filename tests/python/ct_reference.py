"""Test-only numpy ENCODER of the compressed-tensors pack-quantized layout.

Written independently of scripts/ct_decode.py (different formulation: one
bit-field at a time with explicit Python-int masks) so that the decoder can be
tested before nibble writes the format. Scale rule: compressed-tensors' own
symmetric rule (absmax / 7.5 for INT4, absmax / 127.5 for INT8) and a
min/max rule for asymmetric; any rule decodes the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np


def pack_codes(codes: np.ndarray, bits: int, axis: int = 1) -> np.ndarray:
    """Packs signed codes into int32 words along `axis`, lowest bits first."""
    codes = np.asarray(codes, dtype=np.int64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert codes.min(initial=0) >= lo and codes.max(initial=0) <= hi, "codes out of range"
    if axis == 0:
        return np.ascontiguousarray(pack_codes(codes.T, bits, 1).T)
    per_word = 32 // bits
    rows, cols = codes.shape
    n_words = (cols + per_word - 1) // per_word
    words = np.zeros((rows, n_words), dtype=np.uint64)
    unsigned = (codes + (1 << (bits - 1))).astype(np.uint64)
    for col in range(cols):
        j, i = divmod(col, per_word)
        words[:, j] |= unsigned[:, col] << np.uint64(bits * i)
    return words.astype(np.uint32).view(np.int32)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even via float64 arithmetic (an independent path)."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    return ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)).astype(np.uint16)


def bf16_bits_to_f64(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def scale_store(scale: np.ndarray, scale_dtype: str) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (stored array, the float64 value that the stored array means)."""
    if scale_dtype == "F16":
        s = scale.astype(np.float16)
        return s, s.astype(np.float64)
    if scale_dtype == "BF16":
        b = to_bf16_bits(scale)
        return b, bf16_bits_to_f64(b)
    s = scale.astype(np.float32)
    return s, s.astype(np.float64)


class Encoded:
    """One quantized layer: the tensors to store and the exact expectation."""

    def __init__(self, tensors: Dict[str, Tuple[str, np.ndarray]], expected: np.ndarray,
                 codes: np.ndarray, zero_point: Optional[np.ndarray]):
        self.tensors = tensors          # suffix -> (safetensors dtype code, array)
        self.expected = expected        # float64 (q - zp) * scale, exact
        self.codes = codes
        self.zero_point = zero_point


def encode_layer(w: np.ndarray, bits: int, group_size: Optional[int], symmetric: bool,
                 scale_dtype: str = "F16") -> Encoded:
    """Quantizes w [out, in] (group strategy when group_size, else channel)."""
    w = np.asarray(w, dtype=np.float64)
    out_dim, in_dim = w.shape
    g = in_dim if group_size is None else group_size
    n_groups = -(-in_dim // g)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    scale = np.zeros((out_dim, n_groups))
    zp = np.zeros((out_dim, n_groups), dtype=np.int64)
    for k in range(n_groups):
        blk = w[:, k * g:(k + 1) * g]
        if symmetric:
            amax = np.abs(blk).max(axis=1)
            scale[:, k] = amax / ((qmax - qmin) / 2.0)
        else:
            lo = np.minimum(blk.min(axis=1), 0.0)
            hi = np.maximum(blk.max(axis=1), 0.0)
            scale[:, k] = (hi - lo) / (qmax - qmin)
    scale[scale == 0] = 1.0
    stored, s_val = scale_store(scale, scale_dtype)
    if not symmetric:
        for k in range(n_groups):
            blk_lo = np.minimum(w[:, k * g:(k + 1) * g].min(axis=1), 0.0)
            zp[:, k] = np.clip(np.round(qmin - blk_lo / s_val[:, k]), qmin, qmax)
    s_full = np.repeat(s_val, g, axis=1)[:, :in_dim]
    zp_full = np.repeat(zp, g, axis=1)[:, :in_dim]
    q = np.clip(np.round(w / s_full) + zp_full, qmin, qmax).astype(np.int64)
    expected = (q - zp_full) * s_full
    tensors = {
        "weight_packed": ("I32", pack_codes(q, bits, axis=1)),
        "weight_scale": (scale_dtype, stored),
        "weight_shape": ("I64", np.array([out_dim, in_dim], dtype=np.int64)),
    }
    if not symmetric:
        tensors["weight_zero_point"] = ("I32", pack_codes(zp, bits, axis=0))
    return Encoded(tensors, expected, q, None if symmetric else zp)


def weights_args(bits: int, group_size: Optional[int], symmetric: bool) -> dict:
    return {"num_bits": bits, "type": "int", "symmetric": symmetric,
            "strategy": "group" if group_size else "channel",
            "group_size": group_size, "dynamic": False, "actorder": None}


def quantization_config(groups, ignore=("lm_head",)) -> dict:
    """groups: list of (targets, bits, group_size, symmetric)."""
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "ignore": list(ignore),
        "config_groups": {
            f"group_{i}": {"targets": list(t), "weights": weights_args(b, g, s),
                           "input_activations": None, "output_activations": None}
            for i, (t, b, g, s) in enumerate(groups)
        },
    }


def write_model(out_dir: Path, tensors: Dict[str, Tuple[str, np.ndarray]], qconfig: dict,
                torch_dtype: str = "float16") -> None:
    """Writes model.safetensors (with the safetensors package) + config.json."""
    from safetensors import TensorSpec, serialize_file

    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
             "I64": "int64", "U8": "uint8"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {k: np.ascontiguousarray(a) for k, (_, a) in tensors.items()}
    specs = {k: TensorSpec(dtype=names[c], shape=list(keep[k].shape),
                           data_ptr=keep[k].ctypes.data, data_len=keep[k].nbytes)
             for k, (c, _) in tensors.items()}
    serialize_file(specs, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "torch_dtype": torch_dtype, "quantization_config": qconfig}, indent=2))
