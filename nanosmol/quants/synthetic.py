"""Random but valid block bytes of every type, for benchmarks, synthetic models and tests.

Quant bytes are uniform random; the fp16 scale fields get finite values, so every block
decodes to finite numbers. Speed does not depend on the values.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from nanosmol.quants.blocks import block_geometry

# Byte offsets of the fp16 scale (and min) fields inside one block of each quantized type.
SCALE_OFFSETS = {
    T.Q8_0: (0,), T.Q4_0: (0,), T.Q5_0: (0,), T.Q4_1: (0, 2), T.Q5_1: (0, 2),
    T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,),
}


def random_blocks(qtype: T, rows: int, n_blocks: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Raw bytes [rows, row_bytes] of a valid matrix with n_blocks blocks per row."""
    qtype = T(qtype)
    block_size, block_bytes = block_geometry(qtype)
    cols = n_blocks * block_size
    if qtype in (T.F32, T.F16, T.BF16):
        values = rng.standard_normal((rows, cols)) * scale
        if qtype == T.F16:
            return np.clip(values, -65000, 65000).astype(np.float16).view(np.uint8)
        bits = values.astype(np.float32).view(np.uint32)
        return bits.view(np.uint8) if qtype == T.F32 else (bits >> 16).astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, size=(rows, n_blocks, block_bytes), dtype=np.uint8)
    for offset in SCALE_OFFSETS[qtype]:
        d = (rng.uniform(-1, 1, size=(rows, n_blocks)) * scale).astype(np.float16)
        raw[:, :, offset : offset + 2] = d.view(np.uint8).reshape(rows, n_blocks, 2)
    return raw.reshape(rows, -1)
