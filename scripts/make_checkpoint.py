#!/usr/bin/env python3
"""Generates a Llama-style Hugging Face checkpoint directory for tests and
benchmarks, written by the `safetensors` package (not by nibble).

    python scripts/make_checkpoint.py OUT_DIR [--hidden 256] [--intermediate 688]
        [--layers 2] [--vocab 512] [--heads H] [--kv-heads K] [--dtype f16|bf16|f32]
        [--bias] [--seed 0] [--shards N | --max-shard-size 5GB]
        [--min-size 2GB --stream]

Tensors (Hugging Face LlamaForCausalLM names and order):
  model.embed_tokens.weight                         [vocab, hidden]
  model.layers.{i}.self_attn.{q,k,v,o}_proj.weight  q,o [hidden, hidden]; k,v [kv*hd, hidden]
  model.layers.{i}.self_attn.{q,k,v}_proj.bias      with --bias (o_proj too with --o-bias)
  model.layers.{i}.mlp.{gate,up}_proj.weight        [intermediate, hidden]
  model.layers.{i}.mlp.down_proj.weight             [hidden, intermediate]
  model.layers.{i}.{input,post_attention}_layernorm.weight  [hidden]
  model.norm.weight                                 [hidden]
  lm_head.weight                                    [vocab, hidden]
Values: seeded Student-t (df 4) times 0.02, with ~1% outlier input columns
scaled 10-40x in every matrix; norms near 1. Side files: config.json,
generation_config.json, tokenizer_config.json (so that their copying can be
tested).

Sharding as transformers' save_pretrained does it: tensors in order, a new
shard when the next tensor would pass --max-shard-size (or --shards N of
about equal size; fewer when one tensor is larger than total/N), files model-0000k-of-0000n.safetensors and
model.safetensors.index.json with metadata.total_size = the sum of tensor
bytes and weight_map sorted by name.

--stream (for the >= 2 GB benchmark checkpoint): values come from one seeded
pool of heavy-tailed numbers, each tensor a different window of it with its
own outlier columns, and each file is written tensor by tensor with the
safetensors layout (header padded with spaces to a multiple of 8, then the
data in header order), so memory stays at one tensor and the speed near the
disk's. --min-size adds layers until the tensor bytes reach it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

DTYPES = {  # option -> (safetensors code, TensorSpec name, bytes, torch_dtype)
    "f32": ("F32", "float32", 4, "float32"),
    "f16": ("F16", "float16", 2, "float16"),
    "bf16": ("BF16", "bfloat16", 2, "bfloat16"),
}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = m.group(2).upper()
    base = 1024 if (m.group(3) or "").lower() == "ib" else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(unit or " "))


def tensor_shapes(a) -> List[Tuple[str, Tuple[int, ...]]]:
    """Names and shapes in the order transformers' state_dict lists them."""
    hd = a.hidden // a.heads
    kv = a.kv_heads * hd
    shapes: List[Tuple[str, Tuple[int, ...]]] = [("model.embed_tokens.weight", (a.vocab, a.hidden))]
    for i in range(a.layers):
        p = f"model.layers.{i}"
        for proj, rows in (("q", a.hidden), ("k", kv), ("v", kv), ("o", a.hidden)):
            shapes.append((f"{p}.self_attn.{proj}_proj.weight", (rows, a.hidden)))
            if (a.bias and proj != "o") or (a.o_bias and proj == "o"):
                shapes.append((f"{p}.self_attn.{proj}_proj.bias", (rows,)))
        shapes.append((f"{p}.mlp.gate_proj.weight", (a.intermediate, a.hidden)))
        shapes.append((f"{p}.mlp.up_proj.weight", (a.intermediate, a.hidden)))
        shapes.append((f"{p}.mlp.down_proj.weight", (a.hidden, a.intermediate)))
        shapes.append((f"{p}.input_layernorm.weight", (a.hidden,)))
        shapes.append((f"{p}.post_attention_layernorm.weight", (a.hidden,)))
    shapes.append(("model.norm.weight", (a.hidden,)))
    shapes.append(("lm_head.weight", (a.vocab, a.hidden)))
    return shapes


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> stored array (BF16 as uint16 bits, round to nearest even)."""
    if dtype == "bf16":
        return f32_to_bf16_bits(x)
    return x.astype(np.float16 if dtype == "f16" else np.float32)


class Generator:
    def __init__(self, seed: int, stream: bool):
        self.rng = np.random.default_rng(seed)
        self.stream = stream
        self.pool = None
        if stream:
            # 2^22 heavy-tailed values; tensors take windows at random offsets.
            self.pool = (self.rng.standard_t(4, 1 << 22) * 0.02).astype(np.float32)

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        return np.concatenate(list(self.matrix_blocks(rows, cols)), axis=0)

    def matrix_blocks(self, rows: int, cols: int) -> Iterator[np.ndarray]:
        """Row blocks of at most ~4M values (all rows at once without --stream)."""
        n_out = max(1, cols // 100)
        cols_out = self.rng.choice(cols, size=n_out, replace=False)
        gain = self.rng.uniform(10, 40, size=n_out).astype(np.float32)
        if self.pool is None:
            x = (self.rng.standard_t(4, (rows, cols)) * 0.02).astype(np.float32)
            x[:, cols_out] *= gain
            yield x
            return
        size = self.pool.size
        pos = int(self.rng.integers(0, size))
        step = max(1, (1 << 22) // cols)
        for r in range(0, rows, step):
            n = min(step, rows - r) * cols
            idx = (pos + np.arange(n, dtype=np.int64)) % size if pos + n > size else None
            x = (self.pool[idx] if idx is not None else self.pool[pos:pos + n].copy())
            x = x.reshape(-1, cols)
            x[:, cols_out] *= gain
            pos = (pos + n) % size
            yield x

    def vector(self, name: str, n: int) -> np.ndarray:
        if name.endswith("norm.weight"):
            return (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)
        return (self.rng.standard_t(4, n) * 0.01).astype(np.float32)

    def tensor(self, name: str, shape: Tuple[int, ...], dtype: str) -> np.ndarray:
        x = self.matrix(*shape) if len(shape) == 2 else self.vector(name, shape[0])
        return cast(x, dtype)

    def tensor_blocks(self, name: str, shape: Tuple[int, ...], dtype: str) -> Iterator[np.ndarray]:
        if len(shape) != 2:
            yield cast(self.vector(name, shape[0]), dtype)
            return
        for block in self.matrix_blocks(*shape):
            yield cast(block, dtype)


def plan_shards(shapes, itemsize: int, shards: Optional[int], max_shard: Optional[int]) -> List[List[int]]:
    """Tensor indices per shard, in order. --max-shard-size: transformers'
    greedy rule (a tensor larger than the limit gets a shard of its own).
    --shards N: tensor i goes to shard floor(N * bytes before i / total), so
    shards are about equal; fewer than N when single tensors are larger than
    total/N."""
    sizes = [int(np.prod(s)) * itemsize for _, s in shapes]
    total = max(1, sum(sizes))
    if shards and shards > 1:
        groups: Dict[int, List[int]] = {}
        before = 0
        for i, size in enumerate(sizes):
            groups.setdefault(min(shards - 1, before * shards // total), []).append(i)
            before += size
        return [groups[k] for k in sorted(groups)]
    if not max_shard:
        return [list(range(len(shapes)))]
    out: List[List[int]] = [[]]
    current = 0
    for i, size in enumerate(sizes):
        if out[-1] and current + size > max_shard:
            out.append([])
            current = 0
        out[-1].append(i)
        current += size
    return out


def write_with_safetensors(path: Path, tensors: Dict[str, np.ndarray], spec_name: str) -> None:
    from safetensors import TensorSpec, serialize_file

    specs = {k: TensorSpec(dtype=spec_name, shape=list(v.shape), data_ptr=v.ctypes.data,
                           data_len=v.nbytes) for k, v in tensors.items()}
    serialize_file(specs, str(path), metadata={"format": "pt"})


def write_streaming(path: Path, items: List[Tuple[str, Tuple[int, ...]]], code: str,
                    itemsize: int, make) -> None:
    """The safetensors layout, one tensor in memory at a time."""
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in items:
        n = int(np.prod(shape)) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in items:
            for block in make(name, shape):
                f.write(memoryview(np.ascontiguousarray(block)).cast("B"))
    os.replace(tmp, path)


def side_files(out: Path, a, torch_dtype: str) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": torch_dtype,
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.hidden // a.heads,
        "vocab_size": a.vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": bool(a.bias),
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "transformers_version": "4.46.0",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 64,
         "transformers_version": "4.46.0"}, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
         "clean_up_tokenization_spaces": False}, indent=2) + "\n")


def make_checkpoint(out: Path, hidden: int = 256, intermediate: int = 688, layers: int = 2,
                    vocab: int = 512, heads: Optional[int] = None, kv_heads: Optional[int] = None,
                    dtype: str = "f16", bias: bool = False, o_bias: bool = False, seed: int = 0,
                    shards: Optional[int] = None, max_shard_size: Optional[int] = None,
                    stream: bool = False, min_size: Optional[int] = None) -> dict:
    """Writes the checkpoint; returns {"files", "tensors", "total_size", "layers"}."""
    a = argparse.Namespace(hidden=hidden, intermediate=intermediate, layers=layers, vocab=vocab,
                           heads=heads or max(1, hidden // 64), kv_heads=None, bias=bias,
                           o_bias=o_bias)
    a.kv_heads = kv_heads or a.heads
    if hidden % a.heads or a.heads % a.kv_heads:
        raise ValueError(f"hidden {hidden}, heads {a.heads}, kv heads {a.kv_heads} do not divide")
    code, spec_name, itemsize, torch_dtype = DTYPES[dtype]
    if min_size:
        while sum(int(np.prod(s)) for _, s in tensor_shapes(a)) * itemsize < min_size:
            a.layers += 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(a)
    groups = plan_shards(shapes, itemsize, shards, max_shard_size)
    gen = Generator(seed, stream)
    n = len(groups)
    files = ["model.safetensors"] if n == 1 else \
        [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    weight_map = {}
    for fname, idx in zip(files, groups):
        items = [shapes[i] for i in idx]
        if stream:
            write_streaming(out / fname, items, code, itemsize,
                            lambda name, shape: gen.tensor_blocks(name, shape, dtype))
        else:
            write_with_safetensors(out / fname, {nm: gen.tensor(nm, sh, dtype) for nm, sh in items},
                                   spec_name)
        weight_map.update({nm: fname for nm, _ in items})
    total = sum(int(np.prod(s)) for _, s in shapes) * itemsize
    if n > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    side_files(out, a, torch_dtype)
    return {"files": files, "tensors": [nm for nm, _ in shapes], "total_size": total,
            "layers": a.layers}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("out", type=Path)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--heads", type=int, help="default hidden/64")
    ap.add_argument("--kv-heads", type=int, help="default = heads")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f16")
    ap.add_argument("--bias", action="store_true", help="q/k/v biases (Qwen-style)")
    ap.add_argument("--o-bias", action="store_true", help="o_proj bias too")
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--shards", type=int, help="split into about N equal shards")
    g.add_argument("--max-shard-size", type=parse_size, help="e.g. 5GB, 100MB, 64MiB")
    ap.add_argument("--stream", action="store_true", help="fast writer for big checkpoints")
    ap.add_argument("--min-size", type=parse_size, help="add layers until tensors reach this, e.g. 2GB")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    info = make_checkpoint(a.out, a.hidden, a.intermediate, a.layers, a.vocab, a.heads, a.kv_heads,
                           a.dtype, a.bias, a.o_bias, a.seed, a.shards, a.max_shard_size,
                           a.stream, a.min_size)
    print(f"make_checkpoint: {a.out}: {len(info['tensors'])} tensors, {info['layers']} layers, "
          f"{info['total_size']} bytes of {a.dtype} in {len(info['files'])} file(s), "
          f"{time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
