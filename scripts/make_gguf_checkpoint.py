#!/usr/bin/env python3
"""Writes a Llama-shaped GGUF of random weights, streaming: the header first,
then one tensor at a time, so a multi-gigabyte file needs about one tensor of
memory (gguf-py's GGUFWriter keeps every tensor until it writes).

    .venv/bin/python scripts/make_gguf_checkpoint.py OUT.gguf --min-size 2GB
    .venv/bin/python scripts/make_gguf_checkpoint.py OUT.gguf --hidden 256 \\
        --intermediate 640 --vocab 1000 --layers 2 --dtype bf16

Layout (GGUF v3, little-endian, general.alignment absent, so 32): metadata
keys of a llama model (architecture, name, file type, dimensions, a
`tokenizer.ggml.tokens` vocabulary of --vocab strings with scores and token
types), then the tensors in llama.cpp's order and names: token_embd.weight,
per layer blk.N.attn_norm / attn_q / attn_k / attn_v / attn_output /
ffn_norm / ffn_gate / ffn_up / ffn_down, then output_norm.weight and
output.weight. Norms are F32 (as convert_hf_to_gguf.py writes them), every
other tensor --dtype. Shapes follow llama.cpp: a [rows, cols] PyTorch weight
has ne = [cols, rows].

Values: heavy-tailed (Student-t, 4 degrees of freedom, std ~0.02), drawn once
into a 4 Mi-value pool seeded by --seed and rolled by a different amount for
each tensor, so the file is reproducible and fast to write. With --min-size
layers are added until the tensor bytes reach that size (--layers is then the
minimum). Prints a summary line.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

ALIGNMENT = 32
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}
GGML_TYPE = {"f32": GGML_F32, "f16": GGML_F16, "bf16": GGML_BF16}
ELEMENT_BYTES = {GGML_F32: 4, GGML_F16: 2, GGML_BF16: 2}
# Metadata value types.
T_U32, T_I32, T_F32, T_STRING, T_ARRAY = 4, 5, 6, 8, 9


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10,
             "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    i = len(t)
    while i > 0 and not (t[i - 1].isdigit() or t[i - 1] == "."):
        i -= 1
    try:
        return int(float(t[:i]) * units[t[i:]])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _str(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _kv_string(key: str, value: str) -> bytes:
    return _str(key.encode()) + struct.pack("<I", T_STRING) + _str(value.encode())


def _kv_u32(key: str, value: int) -> bytes:
    return _str(key.encode()) + struct.pack("<II", T_U32, value)


def _kv_f32(key: str, value: float) -> bytes:
    return _str(key.encode()) + struct.pack("<If", T_F32, value)


def _kv_array(key: str, etype: int, payload: bytes, count: int) -> bytes:
    return _str(key.encode()) + struct.pack("<IIQ", T_ARRAY, etype, count) + payload


def tensor_list(hidden: int, intermediate: int, vocab: int, heads: int, kv_heads: int,
                layers: int, dtype: int) -> List[Tuple[str, List[int], int]]:
    """(name, ne, ggml type) in file order."""
    kv_dim = hidden // heads * kv_heads
    out = [("token_embd.weight", [hidden, vocab], dtype)]
    for i in range(layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", [hidden], GGML_F32),
                (p + "attn_q.weight", [hidden, hidden], dtype),
                (p + "attn_k.weight", [hidden, kv_dim], dtype),
                (p + "attn_v.weight", [hidden, kv_dim], dtype),
                (p + "attn_output.weight", [hidden, hidden], dtype),
                (p + "ffn_norm.weight", [hidden], GGML_F32),
                (p + "ffn_gate.weight", [hidden, intermediate], dtype),
                (p + "ffn_up.weight", [hidden, intermediate], dtype),
                (p + "ffn_down.weight", [intermediate, hidden], dtype)]
    out += [("output_norm.weight", [hidden], GGML_F32),
            ("output.weight", [hidden, vocab], dtype)]
    return out


def _nbytes(ne: List[int], ggml_type: int) -> int:
    return int(np.prod(ne)) * ELEMENT_BYTES[ggml_type]


def _pad(n: int) -> int:
    return -n % ALIGNMENT


def _values(pool: np.ndarray, n: int, shift: int, ggml_type: int, norm: bool) -> np.ndarray:
    if norm:
        return (1.0 + np.resize(pool, n)).astype(np.float32)
    x = np.roll(np.resize(pool, n), shift)
    if ggml_type == GGML_F16:
        return x.astype(np.float16)
    if ggml_type == GGML_BF16:
        # Round to nearest even (the values are finite).
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.astype(np.uint16)
    return x.astype(np.float32)


def write(out: Path, hidden: int = 2048, intermediate: int = 5632, vocab: int = 32000,
          heads: int = 32, kv_heads: int = 4, layers: int = 1, dtype: str = "f16",
          min_size: Optional[int] = None, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    gtype = GGML_TYPE[dtype]
    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must be a multiple of heads, heads of kv-heads")
    while True:
        tensors = tensor_list(hidden, intermediate, vocab, heads, kv_heads, layers, gtype)
        total = sum(_nbytes(ne, t) for _, ne, t in tensors)
        if min_size is None or total >= min_size:
            break
        layers += 1

    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581t{i}" for i in range(max(0, vocab - 3))]
    tokens = tokens[:vocab]
    kvs = [
        _kv_string("general.architecture", "llama"),
        _kv_string("general.name", f"random-llama-{layers}l"),
        _kv_u32("general.file_type", FILE_TYPE[dtype]),
        _kv_u32("llama.context_length", 4096),
        _kv_u32("llama.embedding_length", hidden),
        _kv_u32("llama.block_count", layers),
        _kv_u32("llama.feed_forward_length", intermediate),
        _kv_u32("llama.attention.head_count", heads),
        _kv_u32("llama.attention.head_count_kv", kv_heads),
        _kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        _kv_string("tokenizer.ggml.model", "llama"),
        _kv_array("tokenizer.ggml.tokens", T_STRING,
                  b"".join(_str(t.encode()) for t in tokens), len(tokens)),
        _kv_array("tokenizer.ggml.scores", T_F32,
                  np.arange(len(tokens), dtype="<f4").tobytes(), len(tokens)),
        _kv_array("tokenizer.ggml.token_type", T_I32,
                  np.array([2, 3, 3] + [1] * (len(tokens) - 3), dtype="<i4")[: len(tokens)]
                  .tobytes(), len(tokens)),
        _kv_u32("tokenizer.ggml.bos_token_id", 1),
        _kv_u32("tokenizer.ggml.eos_token_id", 2),
        _kv_u32("general.quantization_version", 2),
    ]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    offset = 0
    for name, ne, t in tensors:
        header += _str(name.encode()) + struct.pack("<I", len(ne))
        header += struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", t, offset)
        n = _nbytes(ne, t)
        offset += n + _pad(n)
    header += bytes(_pad(len(header)))

    rng = np.random.default_rng(seed)
    pool = (rng.standard_t(4, 1 << 22) * (0.02 / np.sqrt(2))).astype(np.float32)
    tmp = out.with_name("." + out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for i, (name, ne, t) in enumerate(tensors):
                data = _values(pool, int(np.prod(ne)), 7919 * (i + 1), t,
                               name.endswith("norm.weight"))
                data.tofile(f)
                f.write(bytes(_pad(data.nbytes)))
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"out": str(out), "layers": layers, "tensors": len(tensors),
            "tensor_bytes": total, "bytes": out.stat().st_size,
            "seconds": time.perf_counter() - t0}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dtype", choices=sorted(GGML_TYPE), default="f16")
    ap.add_argument("--min-size", type=_size, help="add layers until the tensors reach this size")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    info = write(a.out, a.hidden, a.intermediate, a.vocab, a.heads, a.kv_heads, a.layers,
                 a.dtype, a.min_size, a.seed)
    print(f"wrote {info['out']}: {info['layers']} layers, {info['tensors']} tensors, "
          f"{info['bytes']:,} bytes in {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
