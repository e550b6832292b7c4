#!/usr/bin/env python3
"""Writes an all-F32 copy of a quantised GGUF model, for an exact-arithmetic
llama.cpp oracle.

llama.cpp multiplies Q4_1 weights with activations quantised to Q8_1, while
Lamina's reference engine dequantises the weights to f32 at load and computes
in f32. Running llama.cpp on the SAME weights dequantised to F32 gives an
oracle without the activation quantisation.

  make_f32_model.py [--force] [SRC [DST]]
    SRC default ~/.cache/lamina/SmolLM2-135M-Instruct.Q4_1.gguf
    DST default $LAMINA_PEER_DIR (~/.cache/lamina/peer)/
                SmolLM2-135M-Instruct.dequant-f32.gguf

The output keeps every KV pair byte-for-byte and in order (tokenizer arrays
included), except general.file_type which becomes 0 (ALL_F32). Tensors keep
their names, order and shapes (ne[0] = row length); each is dequantised with
gguf.quants.dequantize (exact for Q4_1/Q8_0: d*q+m / d*q computed in f32, as
ggml does), F32 tensors are copied. The result is read back and checked.
Idempotent: does nothing if DST exists and is newer than SRC and this script.
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGUFValueType, GGMLQuantizationType

HOME = os.path.expanduser("~")
DEFAULT_SRC = os.path.join(HOME, ".cache/lamina/SmolLM2-135M-Instruct.Q4_1.gguf")
PEER_DIR = os.environ.get("LAMINA_PEER_DIR", os.path.join(HOME, ".cache/lamina/peer"))
DEFAULT_DST = os.path.join(PEER_DIR, "SmolLM2-135M-Instruct.dequant-f32.gguf")
FILE_TYPE_KEY = "general.file_type"
ALL_F32 = 0


def field_value(f):
    """(value, vtype, sub_type) of a reader field, strings kept as raw bytes."""
    vtype = f.types[0]
    if vtype == GGUFValueType.ARRAY:
        sub = f.types[-1]
        if len(f.types) != 2:
            raise ValueError(f"{f.name}: nested arrays not supported")
        if sub == GGUFValueType.STRING:
            val = [bytes(f.parts[i]) for i in f.data]
        else:
            val = [f.parts[i][0].item() for i in f.data]
        return val, vtype, sub
    if vtype == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]), vtype, None
    return f.parts[f.data[0]][0].item(), vtype, None


def dequant(t):
    if t.tensor_type == GGMLQuantizationType.F32:
        arr = np.asarray(t.data, dtype=np.float32)
    else:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    ne = tuple(int(x) for x in t.shape)
    arr = arr.reshape(ne[::-1])  # numpy shape is reversed ne
    return arr


def kv_fields(reader):
    return [(k, f) for k, f in reader.fields.items() if not k.startswith("GGUF.")]


def write(src, dst):
    r = GGUFReader(src)
    fields = kv_fields(r)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode("utf-8")
    if fields[0][0] != "general.architecture":
        raise ValueError("expected general.architecture as the first KV pair")

    tmp = dst + ".tmp"
    w = GGUFWriter(tmp, arch)  # adds general.architecture first
    align = r.fields.get("general.alignment")
    if align is not None:
        w.data_alignment = int(align.parts[align.data[0]][0])
    for key, f in fields[1:]:
        val, vtype, sub = field_value(f)
        if key == FILE_TYPE_KEY:
            val = ALL_F32
        w.add_key_value(key, val, vtype, sub)

    for t in r.tensors:
        ne = tuple(int(x) for x in t.shape)
        nbytes = 4 * int(np.prod(ne))
        w.add_tensor_info(t.name, ne[::-1], np.dtype(np.float32), nbytes)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(dequant(t))
    w.close()
    os.replace(tmp, dst)


def verify(src, dst):
    a, b = GGUFReader(src), GGUFReader(dst)
    fa, fb = kv_fields(a), kv_fields(b)
    assert [k for k, _ in fa] == [k for k, _ in fb], "KV keys/order differ"
    for (k, x), (_, y) in zip(fa, fb):
        assert x.types == y.types, f"{k}: type differs"
        if k == FILE_TYPE_KEY:
            assert int(y.parts[y.data[0]][0]) == ALL_F32, "file_type not ALL_F32"
            continue
        px = b"".join(bytes(x.parts[i]) for i in x.data)
        py = b"".join(bytes(y.parts[i]) for i in y.data)
        assert px == py, f"{k}: value differs"
    assert len(a.tensors) == len(b.tensors), "tensor count differs"
    rng = np.random.default_rng(0)
    checked = 0
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.name == tb.name, f"tensor order: {ta.name} vs {tb.name}"
        assert list(ta.shape) == list(tb.shape), f"{ta.name}: shape {ta.shape} vs {tb.shape}"
        assert tb.tensor_type == GGMLQuantizationType.F32, f"{tb.name}: not F32"
        want = dequant(ta).reshape(-1)
        got = np.asarray(tb.data, dtype=np.float32).reshape(-1)
        assert got.size == want.size
        # a few values everywhere, and the whole tensor bit-exact
        idx = rng.integers(0, want.size, size=16)
        assert np.array_equal(got[idx].view(np.uint32), want[idx].view(np.uint32))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{ta.name}: data differs"
        checked += 1
    return len(fa), checked


def main(argv):
    force = "--force" in argv
    args = [x for x in argv if x != "--force"]
    src = args[0] if len(args) > 0 else DEFAULT_SRC
    dst = args[1] if len(args) > 1 else DEFAULT_DST
    mtime = max(os.path.getmtime(src), os.path.getmtime(os.path.abspath(__file__)))
    if not force and os.path.exists(dst) and os.path.getmtime(dst) > mtime:
        print(f"up to date: {dst}")
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    write(src, dst)
    n_kv, n_t = verify(src, dst)
    print(f"wrote {dst}: {os.path.getsize(dst)} bytes, {n_kv} KV pairs, "
          f"{n_t} F32 tensors (verified against dequantised {os.path.basename(src)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
