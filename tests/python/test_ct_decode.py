"""scripts/ct_decode.py against the independent reference encoder
(tests/python/ct_reference.py) and known answers."""

import json
import subprocess
import sys

import numpy as np
import pytest

import ct_decode as ctd
import ct_reference as ref
from conftest import ROOT


# ---------------------------------------------------------------------------
# Known answers, computed by hand from the layout.


def test_known_words_4bit():
    codes = np.arange(-8, 8).reshape(1, 16)   # unsigned 0..15
    words = ref.pack_codes(codes, 4)
    assert words.dtype == np.int32 and words.shape == (1, 2)
    assert words.view(np.uint32).tolist() == [[0x76543210, 0xFEDCBA98]]
    np.testing.assert_array_equal(ctd.unpack_words(words, 4, 16, axis=1), codes)


def test_known_words_8bit():
    # compressed-tensors' own docstring example: [1, 2] -> [129, 130] -> 33409.
    words = ref.pack_codes(np.array([[1, 2]]), 8)
    assert words.tolist() == [[33409]]
    np.testing.assert_array_equal(ctd.unpack_words(words, 8, 2, axis=1), [[1, 2]])
    # The sign bit of the word is used: code 127 in lane 3 -> u = 255 << 24.
    w = ref.pack_codes(np.array([[-128, -128, -128, 127]]), 8)
    assert w.view(np.uint32).tolist() == [[0xFF000000]] and w[0, 0] < 0


def test_known_zero_points_packed_along_dim0():
    # 9 rows of 4-bit zero points -> 2 words per column; row r sits in word
    # r // 8 at bits 4 * (r % 8).
    zp = np.array([[-8], [-7], [-6], [-5], [-4], [-3], [-2], [-1], [7]])
    words = ref.pack_codes(zp, 4, axis=0)
    assert words.shape == (2, 1)
    assert words.view(np.uint32)[:, 0].tolist() == [0x76543210, 0xF]
    np.testing.assert_array_equal(ctd.unpack_words(words, 4, 9, axis=0), zp)
    assert ctd.zero_point_pack_factor(4) == 8 and ctd.zero_point_pack_factor(8) == 4


def test_bf16_rounding_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10000).astype(np.float32)
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    x = np.concatenate([x, ties, -ties, np.float32([0.0, -0.0, 65504.0, 1e-40, np.inf, -np.inf])])
    np.testing.assert_array_equal(ctd.f32_to_bf16_bits(x), ref.to_bf16_bits(x))
    assert np.isnan(ctd.bf16_bits_to_f32(ctd.f32_to_bf16_bits(np.float32([np.nan])))).all()


# ---------------------------------------------------------------------------
# Round trips, layer by layer.

CASES = [
    # bits, group_size (None = channel), symmetric, scale dtype, out, in
    (4, 128, True, "F16", 16, 256),
    (4, 128, False, "F16", 13, 256),   # odd out: zero points pad the last word
    (4, 32, True, "BF16", 7, 96),
    (4, 32, False, "BF16", 9, 64),
    (4, None, True, "F16", 5, 75),     # in not a multiple of 8: padded codes
    (4, None, False, "BF16", 17, 40),
    (8, None, True, "F16", 12, 64),
    (8, None, False, "F16", 7, 30),    # odd out with 4 zero points per word
    (8, 64, True, "BF16", 6, 128),
    (8, 32, False, "BF16", 10, 96),
    (8, 128, False, "F32", 3, 130),    # last group partial
]


def _layer(bits, gs, sym, sdt, out_dim, in_dim, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(4, (out_dim, in_dim)) * 0.02).astype(np.float32)
    w[:, 1] *= 20  # an outlier column
    if not sym:
        w += 0.01  # not centred, so zero points differ from 0
    return w, ref.encode_layer(w, bits, gs, sym, sdt)


@pytest.mark.parametrize("bits,gs,sym,sdt,out_dim,in_dim", CASES)
def test_dequantize_layer_exact(bits, gs, sym, sdt, out_dim, in_dim):
    w, enc = _layer(bits, gs, sym, sdt, out_dim, in_dim)
    t = enc.tensors
    assert t["weight_packed"][1].shape == (out_dim, -(-in_dim * bits // 32))
    if not sym:
        assert t["weight_zero_point"][1].shape == (-(-out_dim // (32 // bits)), -(-in_dim // (gs or in_dim)))
        assert np.any(enc.zero_point != 0)
    got = ctd.dequantize_layer(t["weight_packed"][1], ctd.Raw(sdt, t["weight_scale"][1]),
                               (out_dim, in_dim), bits,
                               None if sym else t["weight_zero_point"][1], gs)
    assert got.dtype == np.float32
    # (q - zp) * scale is exact in float32: no tolerance.
    np.testing.assert_array_equal(got, enc.expected.astype(np.float32))
    # And the original is recovered within half a step, plus what the scale's
    # own rounding (relative eps) moves absmax/scale past the clamp at qmax.
    s = ctd.to_f32(ctd.Raw(sdt, t["weight_scale"][1])).astype(np.float64)
    s = np.repeat(s, gs or in_dim, axis=1)[:, :in_dim]
    eps = {"F16": 2.0**-11, "BF16": 2.0**-8, "F32": 2.0**-24}[sdt]
    qmax = (1 << (bits - 1)) - 1
    err = np.abs(enc.expected - w)
    assert np.all(err <= s * (0.5 + (qmax + 1) * eps) * (1 if sym else 2))


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("sharded", [False, True])
def test_decode_model(tmp_path, dtype, sharded):
    layers = {
        "model.layers.0.self_attn.q_proj": (4, 32, True, "F16", 16, 64),
        "model.layers.0.self_attn.k_proj": (4, 32, True, "F16", 8, 64),
        "model.layers.0.mlp.down_proj": (8, None, True, "F16", 64, 96),
        "model.layers.0.mlp.gate_proj": (4, 32, True, "F16", 96, 64),
    }
    tensors, expected = {}, {}
    for i, (p, case) in enumerate(layers.items()):
        _, enc = _layer(*case, seed=i)
        for suffix, item in enc.tensors.items():
            tensors[f"{p}.{suffix}"] = item
        expected[f"{p}.weight"] = enc.expected.astype(np.float32)
    rng = np.random.default_rng(7)
    plain = {
        "model.embed_tokens.weight": rng.standard_normal((32, 64)).astype(np.float16),
        "lm_head.weight": rng.standard_normal((32, 64)).astype(np.float16),
        "model.norm.weight": np.ones(64, np.float16),
        "model.layers.0.self_attn.q_proj.bias": rng.standard_normal(16).astype(np.float16),
    }
    tensors.update({k: ("F16", v) for k, v in plain.items()})
    tensors["position_ids"] = ("I64", np.arange(8, dtype=np.int64))
    qcfg = ref.quantization_config([
        (["Linear"], 4, 32, True),
        (["re:.*mlp\\.down_proj$"], 8, None, True),
    ])
    model = tmp_path / "model"
    ref.write_model(model, tensors, qcfg)
    if sharded:  # move the tensors into two shards with an index
        from safetensors import safe_open  # noqa: F401
        raw = ctd.read_model(model)
        names = sorted(raw)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        for fname, part in halves.items():
            ctd.write_safetensors({n: raw[n] for n in part}, model / fname, {"format": "pt"})
        (model / "model.safetensors").unlink()
        (model / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 0},
             "weight_map": {n: f for f, part in halves.items() for n in part}}))

    out = ctd.decode_model(model, dtype)
    code = ctd.OUT_DTYPES[dtype]
    assert set(out) == set(expected) | set(plain) | {"position_ids"}
    for name, want in expected.items():
        assert out[name].code == code
        np.testing.assert_array_equal(out[name].array, ctd.from_f32(want, code).array)
    for name, v in plain.items():
        np.testing.assert_array_equal(ctd.to_f32(out[name]), ctd.to_f32(ctd.from_f32(v.astype(np.float32), code)))
    assert out["position_ids"].code == "I64"

    # Written with the safetensors package, read back by it.
    path = tmp_path / "out.safetensors"
    ctd.write_safetensors(out, path)
    back = ctd.read_safetensors(path)
    for name, raw in out.items():
        assert back[name].code == raw.code
        np.testing.assert_array_equal(back[name].array, raw.array)


def test_cli(tmp_path):
    _, enc = _layer(4, 32, False, "BF16", 9, 64)
    tensors = {f"model.layers.0.mlp.up_proj.{k}": v for k, v in enc.tensors.items()}
    ref.write_model(tmp_path / "m", tensors, ref.quantization_config([(["Linear"], 4, 32, False)]),
                    torch_dtype="bfloat16")
    out = tmp_path / "deq.safetensors"
    r = subprocess.run([sys.executable, str(ROOT / "scripts/ct_decode.py"), str(tmp_path / "m"),
                        str(out), "--dtype", "bf16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    back = ctd.read_safetensors(out)
    assert back["model.layers.0.mlp.up_proj.weight"].code == "BF16"
    np.testing.assert_array_equal(back["model.layers.0.mlp.up_proj.weight"].array,
                                  ref.to_bf16_bits(enc.expected.astype(np.float32)))
    # A config that says 8 bits for 4-bit data: rejected, exit 2, no output.
    (tmp_path / "m/config.json").write_text(json.dumps(
        {"quantization_config": ref.quantization_config([(["Linear"], 8, 32, False)])}))
    r = subprocess.run([sys.executable, str(ROOT / "scripts/ct_decode.py"), str(tmp_path / "m"),
                        str(tmp_path / "bad.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2 and "up_proj" in r.stderr
    assert not (tmp_path / "bad.safetensors").exists()


# ---------------------------------------------------------------------------
# Config matching and rejected layouts.


def test_scheme_precedence():
    q = ref.quantization_config([
        (["Linear"], 4, 128, True),
        (["re:.*down_proj$"], 8, None, True),
        (["model.layers.0.mlp.down_proj"], 4, 32, False),
    ], ignore=["lm_head", "re:.*\\.k_proj$"])
    assert ctd.scheme_for("model.layers.1.mlp.up_proj", q)["group_size"] == 128
    assert ctd.scheme_for("model.layers.1.mlp.down_proj", q)["num_bits"] == 8
    assert ctd.scheme_for("model.layers.0.mlp.down_proj", q)["group_size"] == 32
    assert ctd.scheme_for("lm_head", q) is None
    assert ctd.scheme_for("model.layers.3.self_attn.k_proj", q) is None


def _bad(tensors, qcfg, match):
    with pytest.raises(ctd.CtFormatError, match=match):
        ctd.decode_tensors({k: ctd.Raw(c, a) for k, (c, a) in tensors.items()}, qcfg)


def test_rejects():
    _, enc = _layer(4, 32, True, "F16", 4, 60)
    t = {f"p.{k}": v for k, v in enc.tensors.items()}
    q = ref.quantization_config([(["Linear"], 4, 32, True)])
    ctd.decode_tensors({k: ctd.Raw(c, a) for k, (c, a) in t.items()}, q)  # sanity: fine

    pad = dict(t)
    w = pad["p.weight_packed"][1].copy().view(np.uint32)
    w[0, -1] |= np.uint32(0xF0000000)  # lane 7 of the last word: code 63 > in=60
    pad["p.weight_packed"] = ("I32", w.view(np.int32))
    _bad(pad, q, "padding")
    _bad(t, ref.quantization_config([(["Linear"], 4, 32, False)]), "zero_point missing")
    _bad(t, ref.quantization_config([(["Linear"], 4, 32, True)], ignore=["p"]), "ignored")
    _bad(t, ref.quantization_config([(["Linear"], 4, 64, True)]), "weight_scale shape")
    _bad(t, ref.quantization_config([(["Linear"], 8, 32, True)]), "packed shape")
    _bad({k: v for k, v in t.items() if k != "p.weight_shape"}, q, "missing p.weight_shape")
    _bad(dict(t, **{"p.weight": ("F16", np.zeros((4, 60), np.float16))}), q, "both")
    _bad({"x.weight_scale": t["p.weight_scale"]}, q, "without")
    bad_q = dict(q, format="int-quantized")
    _bad(t, bad_q, "pack-quantized")


def test_generated_checkpoint_end_to_end(tmp_path):
    """make_checkpoint (BF16, sharded) -> reference encoder (INT4 g32 default,
    INT8 channel down_proj, lm_head and embeddings kept) -> decoder."""
    import make_checkpoint as mc

    src = tmp_path / "src"
    mc.make_checkpoint(src, hidden=128, intermediate=256, layers=2, vocab=64, dtype="bf16",
                       bias=True, shards=2)
    raw = ctd.read_model(src)
    tensors, expected = {}, {}
    for name, r in raw.items():
        module = name[: -len(".weight")]
        linear = name.endswith("_proj.weight")
        if not linear:
            tensors[name] = (r.code, r.array)
            continue
        down = module.endswith("mlp.down_proj")
        enc = ref.encode_layer(ctd.to_f32(r), 8 if down else 4, None if down else 32, True, "BF16")
        tensors.update({f"{module}.{k}": v for k, v in enc.tensors.items()})
        expected[name] = enc.expected.astype(np.float32)
    qcfg = ref.quantization_config([(["Linear"], 4, 32, True),
                                    (["re:.*mlp\\.down_proj$"], 8, None, True)])
    ref.write_model(tmp_path / "q", tensors, qcfg, torch_dtype="bfloat16")
    out = ctd.decode_model(tmp_path / "q", "f32")
    assert set(out) == set(raw)
    assert len(expected) == 2 * 7
    for name, want in expected.items():
        np.testing.assert_array_equal(out[name].array, want)
    np.testing.assert_array_equal(out["lm_head.weight"].array, ctd.to_f32(raw["lm_head.weight"]))
