#!/usr/bin/env python3
"""Writes tests/fixtures/quant_ref.gguf: raw quantized blocks + their dequantization.

For each GGML type below there are two tensors:
  <type>           raw data of the type, ne = [512, 2] (two rows of 512)
  <type>.expected  F32, ne = [512, 2], gguf.quants.dequantize() of those bytes

Blocks come from gguf.quants.quantize() of random normal floats where the
numpy quantizer exists (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0); for the
k-quants (no numpy quantizer) they are random bytes whose fp16 scale fields
are overwritten with small finite values of both signs, so no NaN/Inf.
Fixed seed: the output is reproducible byte for byte with the same gguf/numpy.

usage: make_quant_fixture.py [OUT.gguf]
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

ROWS, COLS = 2, 512
SEED = 20241121

QUANTIZED = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
# k-quants: byte offsets of fp16 scale fields in one block (d, then dmin).
RANDOM_BLOCKS = {
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}


def source_floats(rng):
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= 3.0                  # second row: wider range
    x[1, ::37] *= 8.0            # with some outliers
    return x


def random_kquant(rng, qtype, offsets):
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = ROWS * COLS // block
    raw = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    for off in offsets:
        mag = rng.uniform(0.002, 0.05, size=nblocks)
        sign = np.where(rng.random(nblocks) < 0.25, -1.0, 1.0)
        raw[:, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(ROWS, COLS // block * type_size)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(here, "..", "..", "tests", "fixtures", "quant_ref.gguf")
    rng = np.random.default_rng(SEED)

    w = gguf.GGUFWriter(out, "lamina-quant-test")
    w.add_uint32("lamina.quant_ref.rows", ROWS)
    w.add_uint32("lamina.quant_ref.cols", COLS)
    w.add_uint32("lamina.quant_ref.seed", SEED)
    expected = {}
    for qtype in QUANTIZED + list(RANDOM_BLOCKS):
        if qtype in RANDOM_BLOCKS:
            raw = random_kquant(rng, qtype, RANDOM_BLOCKS[qtype])
        else:
            raw = quantize(source_floats(rng), qtype)
        deq = dequantize(raw, qtype).astype(np.float32)
        assert deq.shape == (ROWS, COLS), (qtype.name, deq.shape)
        assert np.all(np.isfinite(deq)), qtype.name
        name = qtype.name.lower()
        if raw.dtype == np.float16:      # plain F16: the writer infers the type
            w.add_tensor(name, raw)
        else:                            # uint8 byte rows -> shape (ROWS, COLS)
            w.add_tensor(name, raw.view(np.uint8), raw_dtype=qtype)
        w.add_tensor(name + ".expected", deq)
        expected[name] = (qtype, raw.view(np.uint8).tobytes(), deq)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read back and check every tensor against what was written.
    r = gguf.GGUFReader(out)
    by_name = {t.name: t for t in r.tensors}
    for name, (qtype, raw, deq) in expected.items():
        t, te = by_name[name], by_name[name + ".expected"]
        assert t.tensor_type == qtype, (name, t.tensor_type)
        assert list(t.shape) == [COLS, ROWS], (name, t.shape)   # ne[0] = row length
        assert bytes(np.asarray(t.data).view(np.uint8).tobytes()) == raw, name
        assert te.tensor_type == T.F32 and list(te.shape) == [COLS, ROWS]
        assert np.array_equal(np.asarray(te.data).reshape(ROWS, COLS), deq), name
        again = dequantize(np.asarray(t.data).view(np.uint8).reshape(ROWS, -1)
                           if qtype != T.F16 else np.asarray(t.data), qtype)
        assert np.array_equal(again.reshape(ROWS, COLS).astype(np.float32), deq), name
        print(f"{name:6s} type={qtype.value:2d} bytes={len(raw):5d} "
              f"expected range [{deq.min():+.4f}, {deq.max():+.4f}]")
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(r.tensors)} tensors)")


if __name__ == "__main__":
    main()
