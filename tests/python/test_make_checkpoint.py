"""scripts/make_checkpoint.py: names, dtypes, shapes, index and side files,
read back with the safetensors package."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open

import ct_decode as ctd
import make_checkpoint as mc
from conftest import ROOT

CODES = {"f16": "F16", "bf16": "BF16", "f32": "F32"}


def expected_shapes(hidden, inter, layers, vocab, kv, bias):
    s = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
         "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        s.update({f"{p}.self_attn.q_proj.weight": (hidden, hidden),
                  f"{p}.self_attn.k_proj.weight": (kv, hidden),
                  f"{p}.self_attn.v_proj.weight": (kv, hidden),
                  f"{p}.self_attn.o_proj.weight": (hidden, hidden),
                  f"{p}.mlp.gate_proj.weight": (inter, hidden),
                  f"{p}.mlp.up_proj.weight": (inter, hidden),
                  f"{p}.mlp.down_proj.weight": (hidden, inter),
                  f"{p}.input_layernorm.weight": (hidden,),
                  f"{p}.post_attention_layernorm.weight": (hidden,)})
        if bias:
            s.update({f"{p}.self_attn.q_proj.bias": (hidden,),
                      f"{p}.self_attn.k_proj.bias": (kv,),
                      f"{p}.self_attn.v_proj.bias": (kv,)})
    return s


def read_all(model_dir):
    """name -> (code, shape, file) through the index or the single file."""
    found = {}
    for name, path in ctd.model_files(model_dir).items():
        with safe_open(str(path), framework="numpy") as f:
            sl = f.get_slice(name)
            found[name] = (sl.get_dtype(), tuple(sl.get_shape()), path.name)
    return found


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
@pytest.mark.parametrize("stream", [False, True])
def test_single_file(tmp_path, dtype, stream):
    out = tmp_path / "ck"
    mc.make_checkpoint(out, hidden=128, intermediate=344, layers=2, vocab=96, kv_heads=1,
                       dtype=dtype, bias=True, seed=3, stream=stream)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"]
    want = expected_shapes(128, 344, 2, 96, 64, True)
    found = read_all(out)
    assert {k: v[1] for k, v in found.items()} == want
    assert {v[0] for v in found.values()} == {CODES[dtype]}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["torch_dtype"] == {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}[dtype]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == \
        (128, 344, 2, 2, 1, 96)
    # The header is 8-byte aligned like the reference writer's, and the
    # values are finite, heavy-tailed and have outlier columns.
    raw = ctd.read_safetensors(out / "model.safetensors")
    with open(out / "model.safetensors", "rb") as f:
        assert int.from_bytes(f.read(8), "little") % 8 == 0
    x = ctd.to_f32(raw["model.layers.1.mlp.up_proj.weight"]).astype(np.float64)
    assert np.isfinite(x).all()
    col = np.abs(x).max(axis=0)
    assert col.max() > 5 * np.median(col)
    norm = ctd.to_f32(raw["model.norm.weight"])
    assert abs(float(norm.mean()) - 1.0) < 0.1


def test_seeded(tmp_path):
    for d in ("a", "b"):
        mc.make_checkpoint(tmp_path / d, hidden=64, intermediate=128, layers=1, vocab=32, seed=9)
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


@pytest.mark.parametrize("stream", [False, True])
def test_sharded_index(tmp_path, stream):
    out = tmp_path / "ck"
    info = mc.make_checkpoint(out, hidden=128, intermediate=256, layers=3, vocab=128, dtype="bf16",
                              max_shard_size=200_000, stream=stream)
    n = len(info["files"])
    assert n > 2 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    wm = index["weight_map"]
    assert list(wm) == sorted(wm)
    assert set(wm.values()) == {f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)}
    assert set(wm) == set(expected_shapes(128, 256, 3, 128, 128, False))
    total = 0
    for shard in sorted(set(wm.values())):
        with safe_open(str(out / shard), framework="numpy") as f:
            assert set(f.keys()) == {k for k, v in wm.items() if v == shard}
            for k in f.keys():
                sl = f.get_slice(k)
                total += int(np.prod(sl.get_shape())) * 2
                assert sl.get_dtype() == "BF16"
    assert index["metadata"]["total_size"] == total == info["total_size"]


def test_shards_count_and_cli(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts/make_checkpoint.py"), str(tmp_path / "ck"),
                        "--hidden", "64", "--intermediate", "160", "--layers", "4", "--vocab", "64",
                        "--shards", "3", "--dtype", "f32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "ck/model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    assert "3 file(s)" in r.stdout


def test_min_size(tmp_path):
    info = mc.make_checkpoint(tmp_path / "ck", hidden=128, intermediate=256, layers=1, vocab=64,
                              dtype="f16", stream=True, min_size=1_000_000)
    assert info["total_size"] >= 1_000_000 and info["layers"] > 1
    assert json.loads((tmp_path / "ck/config.json").read_text())["num_hidden_layers"] == info["layers"]
    assert mc.parse_size("2GB") == 2_000_000_000 and mc.parse_size("64MiB") == 64 << 20
