#!/usr/bin/env python3
"""Writes a tiny safetensors model directory with the standard library only:
make_tiny_safetensors.py DIR  ->  DIR/model.safetensors + DIR/config.json.
Tensors (F16): model.layers.0.mlp.up_proj.weight [8, 64],
model.layers.0.mlp.up_proj.bias [8], lm_head.weight [16, 64]."""
import json
import math
import os
import struct
import sys


def f16(values):
    return b"".join(struct.pack("<e", v) for v in values)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tensors = [
        ("model.layers.0.mlp.up_proj.weight", [8, 64]),
        ("model.layers.0.mlp.up_proj.bias", [8]),
        ("lm_head.weight", [16, 64]),
    ]
    header, data = {}, b""
    for i, (name, shape) in enumerate(tensors):
        n = math.prod(shape)
        blob = f16([0.02 * math.sin(0.37 * k + i) for k in range(n)])
        header[name] = {"dtype": "F16", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "torch_dtype": "float16"}, f)


if __name__ == "__main__":
    main()
