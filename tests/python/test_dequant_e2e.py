"""End to end: `nibble convert` then `nibble dequant`, compared bit for bit
with the independent numpy decoder (scripts/ct_decode.py) and with the
original weights within the RMSE that convert's report states.

Needs the built binary in NIBBLE_BIN (set by tests/python/python_tests.cmake);
skipped without it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import ct_decode as ctd
from conftest import ROOT

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

ORIG = {"f16": "F16", "bf16": "BF16"}
# int4-g32 symmetric by default, int4-g64-asym and int8 per channel by rule;
# also int8-asym and int4-row-asym (per channel, asymmetric zero points).
SCHEMES = ["--scheme", "int4-g32",
           "--tensor-type", "*.gate_proj=int4-g64-asym",
           "--tensor-type", "*.down_proj=int8",
           "--tensor-type", "*.up_proj=int8-asym",
           "--tensor-type", "*.o_proj=int4-row-asym"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NIBBLE, *args], capture_output=True, text=True)


@pytest.fixture(scope="module", params=["f16", "bf16"])
def converted(request, tmp_path_factory):
    dtype = request.param
    base = tmp_path_factory.mktemp(f"deq_{dtype}")
    src = base / "src"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_checkpoint.py"), str(src),
                    "--hidden", "64", "--intermediate", "128", "--layers", "2",
                    "--vocab", "96", "--dtype", dtype, "--seed", "5", "--bias"],
                   check=True, stdout=subprocess.DEVNULL)
    ct = base / "ct"
    report = base / "report.json"
    r = run("convert", str(src), str(ct), "--threads", "2", "--quiet",
            "--report", str(report), *SCHEMES)
    assert r.returncode == 0, r.stderr
    return dtype, src, ct, json.loads(report.read_text())


def read_output(out: Path) -> dict:
    tensors = ctd.read_model(out)
    names = []
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as sf:
            names += list(sf.keys())
    assert sorted(names) == sorted(tensors)
    return tensors


@pytest.mark.parametrize("target", ["f32", "orig", "f16", "bf16"])
def test_dequant_matches_decoder_bit_for_bit(converted, tmp_path, target):
    dtype, src, ct, report = converted
    target = dtype if target == "orig" else target
    out = tmp_path / "out"
    r = run("dequant", str(ct), str(out), "--dtype", target, "--threads", "2")
    assert r.returncode == 0, r.stderr
    ours = read_output(out)
    ref = ctd.decode_model(ct, target)
    assert set(ours) == set(ref)
    original = ctd.read_model(src)
    assert set(ours) == set(original)
    for name, raw in ref.items():
        mine = ours[name]
        assert mine.code == raw.code, name
        assert mine.shape == raw.shape, name
        assert np.ascontiguousarray(mine.array).tobytes() == \
            np.ascontiguousarray(raw.array).tobytes(), name
    # The config has no quantization_config; side files are copied.
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    src_cfg = json.loads((src / "config.json").read_text())
    assert cfg == src_cfg
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name not in ("config.json",) and f.is_file() \
                and not f.name.endswith(".index.json"):
            assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    # Every quantized weight is within the reported RMSE of the original.
    rows = {row["name"]: row for row in report["tensors"]}
    quantized = 0
    for name, row in rows.items():
        if row["scheme"] == "keep":
            continue
        quantized += 1
        x = ctd.to_f32(original[name]).astype(np.float64)
        y = ctd.to_f32(ours[name]).astype(np.float64)
        rmse = float(np.sqrt(np.mean((y - x) ** 2)))
        if target == "f32":
            assert abs(rmse - row["rmse"]) <= 1e-6 * row["rmse"] + 1e-12, name
        else:  # one more rounding to a 16-bit dtype
            assert rmse <= 1.5 * row["rmse"] + 1e-12, name
    assert quantized >= 14
    assert {row["scheme"] for row in rows.values()} >= {"int4-g32", "int4-g64-asym", "int8",
                                                          "int8-asym", "int4-row-asym"}


def test_dequant_sharded(converted, tmp_path):
    dtype, _, ct, _ = converted
    out = tmp_path / "out"
    r = run("dequant", str(ct), str(out), "--dtype", "f32", "--max-shard-size", "100kB")
    assert r.returncode == 0, r.stderr
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    ours = read_output(out)
    ref = ctd.decode_model(ct, "f32")
    assert set(ours) == set(ref)
    for name, raw in ref.items():
        assert ours[name].array.tobytes() == np.ascontiguousarray(raw.array).tobytes(), name


def test_dequant_refuses_existing_output(converted, tmp_path):
    _, _, ct, _ = converted
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = run("dequant", str(ct), str(out), "--dtype", "f16")
    assert r.returncode == 1
    assert "exists" in r.stderr
    assert (out / "keep.txt").read_text() == "x"
    r = run("dequant", str(ct), str(out), "--dtype", "f16", "--force")
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists()
    assert (out / "model.safetensors").is_file()


def test_dequant_rejects_mismatched_config(converted, tmp_path):
    _, _, ct, _ = converted
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ct.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    for g in cfg["quantization_config"]["config_groups"].values():
        if g["weights"]["strategy"] == "group" and g["weights"]["group_size"] == 32:
            g["weights"]["group_size"] = 64
    (bad / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = run("dequant", str(bad), str(out), "--dtype", "f32")
    assert r.returncode == 2, r.stderr
    assert "weight_scale" in r.stderr and "model.safetensors" in r.stderr
    assert not out.exists()
    assert not any(p.name.startswith(".out.nibble-tmp") for p in tmp_path.iterdir())

    # Not a quantized model at all.
    del cfg["quantization_config"]
    (bad / "config.json").write_text(json.dumps(cfg))
    r = run("dequant", str(bad), str(out), "--dtype", "f32")
    assert r.returncode == 2
    assert "quantization_config" in r.stderr
    assert not out.exists()
