"""End to end: `nibble convert --config` (NIBBLE_BIN) on Llama-style checkpoints
written by scripts/make_checkpoint.py.

- The shipped tools/nibble/examples/mixed-precision.toml: per tensor, the
  scheme in the --report JSON, the config group (or ignore entry) in the
  output's quantization_config, the tensors read back with `safetensors` and
  decoded with scripts/ct_decode.py within the reported error.
- Command-line overrides beat the file: --scheme, --group-size, --keep,
  --tensor-type; rules are tried in order (all --keep, then all --tensor-type,
  then the file's [[rule]]s) and the first match wins.
- A rule that matches nothing: a warning naming it and its config line, exit 0;
  with --strict an error and nothing written.
- An unknown key: an error naming the config line; nothing written.
- --dry-run --config: the plan on stdout (targets equal to what a real run
  writes, reasons naming the config lines), nothing written.

Skipped without NIBBLE_BIN."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
from safetensors import safe_open

import ct_decode as ctd
import make_checkpoint as mk
from conftest import ROOT

NIBBLE = os.environ.get("NIBBLE_BIN", "")
pytestmark = pytest.mark.skipif(not NIBBLE or not Path(NIBBLE).is_file(),
                                reason="NIBBLE_BIN is not set to the built nibble binary")

EXAMPLE = ROOT / "tools" / "nibble" / "examples" / "mixed-precision.toml"
HIDDEN, INTER, LAYERS, VOCAB = 128, 256, 2, 96
CODES = {"f32": "F32", "bf16": "BF16", "f16": "F16"}
CASTS = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def linear_modules() -> List[str]:
    return [f"model.layers.{i}.{part}.{p}" for i in range(LAYERS)
            for part, projs in (("self_attn", ATTN), ("mlp", MLP)) for p in projs]


def nibble(*args) -> subprocess.CompletedProcess:
    return subprocess.run([NIBBLE, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module", params=["f32", "bf16"])
def model(request, tmp_path_factory):
    dtype = request.param
    src = tmp_path_factory.mktemp(f"cfg_{dtype}") / "in"
    mk.make_checkpoint(src, hidden=HIDDEN, intermediate=INTER, layers=LAYERS, vocab=VOCAB,
                       dtype=dtype, seed=11)
    return dtype, src


def rule_line(text: str, match: str) -> int:
    """1-based line of the [[rule]] header whose `match` is `match`."""
    lines = text.splitlines()
    at = next(i for i, l in enumerate(lines) if l.strip() == f'match = "{match}"')
    return max(i for i in range(at) if lines[i].strip() == "[[rule]]") + 1


def leftovers(parent: Path) -> List[str]:
    return sorted(p.name for p in parent.iterdir() if "nibble-" in p.name)


def convert(src: Path, out: Path, *args) -> Dict[str, dict]:
    report = out.parent / (out.name + ".report.json")
    r = nibble("convert", src, out, "--report", report, "--quiet", "--threads", "2", *args)
    assert r.returncode == 0, r.stderr
    assert not [l for l in r.stderr.splitlines() if not l.startswith("nibble: warning: ")], \
        r.stderr
    assert leftovers(out.parent) == []
    return {row["name"]: row for row in json.loads(report.read_text())["tensors"]}


def check_output(src: Path, out: Path, rows: Dict[str, dict], dtype: str,
                 scale_dtype: Optional[str] = None) -> dict:
    """The output agrees with the report: config groups / ignore per module,
    tensors and dtypes read back with safetensors, decoded within the
    reported error. Returns quantization_config."""
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    group_of: Dict[str, dict] = {}
    for g in qc["config_groups"].values():
        for t in g["targets"]:
            assert t not in group_of, f"{t} in two config groups"
            group_of[t] = g["weights"]
    original = ctd.read_model(src)
    stored = ctd.read_model(out)
    names = set()
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as sf:
            names.update(sf.keys())
    assert names == set(stored)
    decoded = ctd.decode_tensors(stored, qc, "f32", keep_dtypes=True)
    assert set(decoded) == set(original) == set(rows)
    for name, raw in original.items():
        scheme = rows[name]["scheme"]
        module = name[: -len(".weight")]
        if scheme == "keep":
            assert stored[name].code == raw.code
            np.testing.assert_array_equal(stored[name].array, raw.array)
            assert module not in group_of
            if raw.array.ndim == 2 and "embed" not in name:
                assert module in qc["ignore"], module
            continue
        if scheme in CASTS:
            assert stored[name].code == CASTS[scheme], name
            want = ctd.from_f32(ctd.to_f32(raw), CASTS[scheme])
            np.testing.assert_array_equal(stored[name].array, want.array)
            assert module in qc["ignore"] and module not in group_of
            continue
        m = re.fullmatch(r"int(4|8)(?:-g(\d+)|-(row))?(-asym)?", scheme)
        assert m, scheme
        bits = int(m.group(1))
        group = int(m.group(2)) if m.group(2) else None
        w = group_of[module]
        assert module not in qc["ignore"]
        assert w["num_bits"] == bits and w["symmetric"] == (m.group(4) is None), (name, w)
        assert w["strategy"] == ("group" if group else "channel"), (name, w)
        assert w.get("group_size") == group, (name, w)
        out_dim, in_dim = raw.shape
        assert f"{module}.weight" not in stored
        assert stored[f"{module}.weight_packed"].code == "I32"
        assert stored[f"{module}.weight_packed"].shape == (out_dim, in_dim * bits // 32)
        assert stored[f"{module}.weight_scale"].code == CODES[scale_dtype or dtype]
        assert stored[f"{module}.weight_scale"].shape == (out_dim, in_dim // group if group else 1)
        assert stored[f"{module}.weight_shape"].array.tolist() == [out_dim, in_dim]
        x = ctd.to_f32(raw).astype(np.float64)
        err = ctd.to_f32(decoded[name]).astype(np.float64) - x
        rmse = float(np.sqrt(np.mean(err * err)))
        assert abs(rmse - rows[name]["rmse"]) <= 1e-5 * rows[name]["rmse"] + 1e-12, name
        assert float(np.max(np.abs(err))) <= rows[name]["max_abs_error"] * (1 + 1e-6) + 1e-12
    return qc


def expected_example(name: str, **over) -> str:
    """What mixed-precision.toml gives `name` (built-in rules for the rest)."""
    if name == "lm_head.weight":
        return over.get("lm_head", "fp16")
    if name.endswith("mlp.down_proj.weight"):
        return over.get("down_proj", "int8")
    if any(name.endswith(f"{p}.weight") for p in ATTN + MLP):
        return over.get("default", "int4-g128")
    return "keep"  # embeddings, norms


def test_example_config(model, tmp_path):
    dtype, src = model
    out = tmp_path / "out"
    rows = convert(src, out, "--config", EXAMPLE)
    assert {n: r["scheme"] for n, r in rows.items()} == {n: expected_example(n) for n in rows}
    qc = check_output(src, out, rows, dtype)
    # One group per scheme with explicit targets, lm_head ignored.
    by_bits = {g["weights"]["num_bits"]: g for g in qc["config_groups"].values()}
    assert set(by_bits) == {4, 8}
    assert sorted(by_bits[8]["targets"]) == sorted(m for m in linear_modules() if "down_proj" in m)
    assert sorted(by_bits[4]["targets"]) == sorted(m for m in linear_modules()
                                                   if "down_proj" not in m)
    assert by_bits[4]["weights"]["group_size"] == 128
    assert by_bits[8]["weights"]["strategy"] == "channel"
    assert qc["ignore"] == ["lm_head"]
    with safe_open(str(out / "model.safetensors"), framework="numpy") as sf:
        head = sf.get_tensor("lm_head.weight")
        assert head.dtype == np.float16 and head.shape == (VOCAB, HIDDEN)
    # The other files of the model directory come along; config.json keeps
    # its fields.
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("quantization_config")
    assert cfg == json.loads((src / "config.json").read_text())
    name = "tokenizer_config.json"
    assert (out / name).read_bytes() == (src / name).read_bytes()


# Each: extra arguments, expected scheme per tensor (a function of the name).
OVERRIDES = {
    "scheme": (["--scheme", "int8"], lambda n: expected_example(n, default="int8")),
    "group-size": (["--group-size", "64"], lambda n: expected_example(n, default="int4-g64")),
    "keep-beats-file-rule": (["--keep", "*.mlp.down_proj"],
                             lambda n: expected_example(n, down_proj="keep")),
    "tensor-type-beats-file-rule": (["--tensor-type", "lm_head=bf16"],
                                    lambda n: expected_example(n, lm_head="bf16")),
    # All --keep rules come before all --tensor-type rules, whatever the order
    # on the command line.
    "keep-before-tensor-type": (["--tensor-type", "*.down_proj=int4-g32", "--keep", "*.down_proj"],
                                lambda n: expected_example(n, down_proj="keep")),
    # Among --tensor-type rules the first match wins.
    "first-match-wins": (
        ["--tensor-type", "model.layers.0.*=int8", "--tensor-type", "*.o_proj=int4-g32",
         "--tensor-type", "*.down_proj=int4-g64-asym"],
        lambda n: ("int8" if n.startswith("model.layers.0.") and n.endswith("_proj.weight")
                   else "int4-g32" if n.endswith("o_proj.weight")
                   else "int4-g64-asym" if n.endswith("down_proj.weight")
                   else expected_example(n))),
    # --scheme replaces the file's default, --group-size the file's group size,
    # and a file rule's bare "int4" takes the group size in force.
    "scheme-and-group-size": (["--scheme", "int4", "--group-size", "32",
                               "--tensor-type", "*.up_proj=int4-asym", "--tensor-type",
                               "*.gate_proj=int4-asym"],
                              lambda n: ("int4-g32-asym" if n.endswith(("up_proj.weight",
                                                                        "gate_proj.weight"))
                                         else expected_example(n, default="int4-g32"))),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_cli_overrides_beat_the_file(case, model, tmp_path):
    dtype, src = model
    args, expected = OVERRIDES[case]
    out = tmp_path / "out"
    rows = convert(src, out, "--config", EXAMPLE, *args)
    assert {n: r["scheme"] for n, r in rows.items()} == {n: expected(n) for n in rows}
    check_output(src, out, rows, dtype)


def test_rule_matching_nothing_warns(model, tmp_path):
    dtype, src = model
    text = EXAMPLE.read_text() + '\n[[rule]]\nmatch = "*.mlp.no_such_proj"\nscheme = "int8"\n'
    cfg = tmp_path / "rules.toml"
    cfg.write_text(text)
    line = rule_line(text, "*.mlp.no_such_proj")
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    r = nibble("convert", src, out, "--config", cfg, "--quiet", "--report", report)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        f"nibble: warning: rule {cfg}:{line} (*.mlp.no_such_proj -> int8) matches no tensor"]
    rows = {row["name"]: row for row in json.loads(report.read_text())["tensors"]}
    assert {n: r["scheme"] for n, r in rows.items()} == {n: expected_example(n) for n in rows}

    # --strict: the same as one error line; nothing written, not even the report.
    out2 = tmp_path / "out2"
    report2 = tmp_path / "r2.json"
    before = cfg.read_bytes()
    r = nibble("convert", src, out2, "--config", cfg, "--strict", "--report", report2)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == (f"nibble: error: invalid argument: rule {cfg}:{line} "
                         "(*.mlp.no_such_proj -> int8) matches no tensor [strict]"), r.stderr
    assert all(l.startswith("nibble: warning: ") for l in lines[:-1])
    assert r.stdout == ""
    assert not out2.exists() and not report2.exists()
    assert leftovers(tmp_path) == []
    assert cfg.read_bytes() == before


@pytest.mark.parametrize("typo", ["top-level", "in-rule"])
def test_unknown_key_names_the_line(typo, model, tmp_path):
    dtype, src = model
    text = EXAMPLE.read_text()
    if typo == "top-level":
        text = text.replace("group_size = 128", "group-size = 128")
        key = "group-size"
        suffix = "(expected default, group_size, scale_dtype, strict or [[rule]])"
    else:
        text = text.replace('scheme = "int8"', 'schema = "int8"')
        key, suffix = "schema", "in [[rule]] (expected match, scheme)"
    line = next(i + 1 for i, l in enumerate(text.splitlines()) if l.startswith(key + " ="))
    cfg = tmp_path / "rules.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    r = nibble("convert", src, out, "--config", cfg, "--report", tmp_path / "r.json")
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"nibble: error: bad format: {cfg}:{line}:1: unknown key '{key}' {suffix}"], r.stderr
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.toml"]


def parse_plan(stdout: str) -> Dict[str, List[str]]:
    """tensor -> [shape, dtype, target, bytes, reason] from the plan table."""
    lines = stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["tensor", "shape", "dtype", "target",
                                             "bytes before -> after", "reason"], lines[0]
    plan = {}
    for l in lines[1:]:
        if l.startswith(("warning: ", "total: ")):
            continue
        cells = re.split(r"\s{2,}", l, maxsplit=5)
        plan[cells[0]] = cells[1:]
    return plan


def test_dry_run_with_config(model, tmp_path):
    dtype, src = model
    text = EXAMPLE.read_text()
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    r = nibble("convert", src, out, "--config", EXAMPLE, "--dry-run", "--report", report)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert not os.path.lexists(out) and not report.exists()
    assert list(tmp_path.iterdir()) == []
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    plan = parse_plan(r.stdout)
    names = mk.tensor_shapes(type("A", (), dict(hidden=HIDDEN, intermediate=INTER, layers=LAYERS,
                                                 vocab=VOCAB, heads=HIDDEN // 64,
                                                 kv_heads=HIDDEN // 64, bias=False,
                                                 o_bias=False))())
    assert sorted(plan) == sorted(n for n, _ in names)
    head_line = rule_line(text, "lm_head")
    down_line = rule_line(text, "*.mlp.down_proj")
    default_line = next(i + 1 for i, l in enumerate(text.splitlines()) if l.startswith("default ="))
    for name, (shape, code, target, nbytes, reason) in plan.items():
        assert code == CODES[dtype]
        assert target == expected_example(name), (name, target)
        if name == "lm_head.weight":
            assert f"{EXAMPLE}:{head_line} (lm_head -> fp16)" in reason, reason
        elif name.endswith("down_proj.weight"):
            assert f"{EXAMPLE}:{down_line} (*.mlp.down_proj -> int8)" in reason, reason
        elif target == "int4-g128":
            assert f"{EXAMPLE}:{default_line}" in reason, reason
    quantized = 7 * LAYERS
    assert re.search(rf"^total: {len(names)} tensors \({quantized} quantized, 1 cast, "
                     rf"{len(names) - quantized - 1} kept\)", r.stdout, re.M), r.stdout

    # The plan is what a real run does, sizes included.
    rows = convert(src, tmp_path / "real", "--config", EXAMPLE)
    for name, (shape, code, target, nbytes, reason) in plan.items():
        assert rows[name]["scheme"] == target, name
        b_in, b_out = (int(v) for v in nbytes.split(" -> "))
        assert (rows[name]["bytes_in"], rows[name]["bytes_out"]) == (b_in, b_out), name


def test_config_scale_dtype_is_honoured(model, tmp_path):
    dtype, src = model
    want = "bf16" if dtype == "f32" else "f32"
    cfg = tmp_path / "rules.toml"
    cfg.write_text(f'default = "int4"\nscale_dtype = "{want}"\n')
    rows = convert(src, tmp_path / "out", "--config", cfg)
    stored = ctd.read_model(tmp_path / "out")
    scales = {n: t.code for n, t in stored.items() if n.endswith(".weight_scale")}
    assert scales and set(scales.values()) == {CODES[want]}, scales
    # Decoded independently (scales in their own dtype): within the reported RMSE.
    check_output(src, tmp_path / "out", rows, dtype, scale_dtype=want)
