#!/usr/bin/env python3
"""Cross-checks tests/fixtures/quant_ref.gguf against ggml's own C dequantizers.

Loads libggml-base from the peer build (ctypes, public ggml_get_type_traits()),
runs to_float on every raw tensor and compares with <type>.expected, which was
produced by the python gguf package. Exact equality is expected.

usage: check_quant_fixture.py QUANT_REF.gguf PEER_BUILD_BIN_DIR
"""
import ctypes
import os
import sys

import numpy as np
import gguf

TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


def main():
    path, bindir = sys.argv[1], sys.argv[2]
    lib = ctypes.CDLL(os.path.join(bindir, "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]

    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    bad = 0
    for t in r.tensors:
        if t.name.endswith(".expected"):
            continue
        exp = np.asarray(by_name[t.name + ".expected"].data, dtype=np.float32).ravel()
        raw = np.ascontiguousarray(np.asarray(t.data)).view(np.uint8)
        tr = lib.ggml_get_type_traits(int(t.tensor_type)).contents
        out = np.empty(exp.size, dtype=np.float32)
        TO_FLOAT(tr.to_float)(raw.ctypes.data, out.ctypes.data, out.size)
        same = np.array_equal(out, exp)
        maxdiff = float(np.max(np.abs(out - exp)))
        print(f"ggml {tr.type_name.decode():5s} vs gguf-py: "
              f"{'identical' if same else f'MISMATCH max|diff|={maxdiff:g}'}")
        bad += not same
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
