"""The host's compute peaks: the limit of a compute-bound prefill, as bandwidth.py's read is decode's.

Each peak is the rate of one inner step the kernels are built from, run on every thread with
independent accumulators (more than the step's latency keeps busy), best of 9 runs of 0.1-0.3 s
(on a shared host a run that meets another tenant's burst reads half):

- `f32`: 8-wide fused multiply-adds (BLAS's inner step: the float weights' prefill);
- `int8`: 32 byte products per vpmaddubsw, its int16 pairs added up in int16 (the 4- to
  6-bit types, whose small codes let several pairs add before one vpmaddwd), or one vpdpbusd
  where the target has VNNI;
- `q8_0`: llama.cpp's sign trick for int8 x int8 (vpsignb, vpmaddubsw, vpmaddwd, vpaddd per 32
  products: Q8_0 weights without VNNI), or vpdpbusd with VNNI;
- `int16`: vpmaddwd and vpaddd per 16 products (vpdpwssd with VNNI): our Q8_0 prefill where
  Numba compiles for AVX2 without VNNI (`nanosmol/quants/q8_0_tiles.py`), whose rows and
  activations are widened to int16 first.

Counted as 2 operations per product, as prefill's GFLOP/s are (2 x weights x tokens).
Only where Numba compiles for AVX2 (`--isa avx2` or `native` on x86); elsewhere int8 and
q8_0 are not measured.

    python tools/peak.py -t 1,2
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nanosmol.simd import (I8x32, I16x16, I32x8, call_llvm, dot_bytes_vnni, dot_pairs_vnni, madd_x86, target_has_avx2,
                          target_has_vnni, vector_at)
from timing import best_time

# 4 independent int8 accumulators, each stepped ROUNDS times per iteration (with 8, the sign
# trick's loop needed 19 vector registers and spilled to the stack)
CHAINS, ROUNDS = 4, 4
STEPS = {"f32": 8 * 2 * 12, "int8": 32 * 2 * CHAINS * ROUNDS, "q8_0": 32 * 2 * CHAINS * ROUNDS,
         "int16": 16 * 2 * CHAINS * ROUNDS}  # per iteration


def _opaque(builder, value):
    """value, hidden from the optimizer (an empty inline asm): it cannot hoist the products
    of loop-invariant inputs out of the loop."""
    asm = ir.InlineAsm(ir.FunctionType(value.type, [value.type]), "", "=x,0", side_effect=True)
    return builder.call(asm, [value])


def _int8_iteration(builder, vnni: bool, kind: str, weights, xs, accs):
    """A step on each of the CHAINS accumulators; returns the new ones."""
    ones16 = ir.Constant(I16x16, [1] * 16)
    if kind == "int16":
        pairs = [builder.bitcast(x, I16x16) for x in xs]
        if vnni:
            return [dot_pairs_vnni(builder, acc, builder.bitcast(weights, I16x16), x) for acc, x in zip(accs, pairs)]
        return [builder.add(acc, call_llvm(builder, "llvm.x86.avx2.pmadd.wd", I32x8, [builder.bitcast(weights, I16x16), x]))
                for acc, x in zip(accs, pairs)]
    if vnni:
        return [dot_bytes_vnni(builder, acc, weights, x) for acc, x in zip(accs, xs)]
    if kind == "q8_0":
        magnitude = call_llvm(builder, "llvm.abs.v32i8", I8x32, [weights, ir.Constant(ir.IntType(1), 0)])
        signed_xs = [call_llvm(builder, "llvm.x86.avx2.psign.b", I8x32, [x, weights]) for x in xs]
        return [builder.add(acc, madd_x86(builder, magnitude, x, ones16)) for acc, x in zip(accs, signed_xs)]
    # int16 accumulators (bitcast in I32x8 registers): pairs of small codes cannot saturate them here
    pairs = [call_llvm(builder, "llvm.x86.avx2.pmadd.ub.sw", I16x16, [weights, x]) for x in xs]
    return [builder.bitcast(builder.add(builder.bitcast(acc, I16x16), p), I32x8) for acc, p in zip(accs, pairs)]


def _kernel(kind: str):
    @intrinsic
    def run(typingctx, data, out, iterations):
        """Run `iterations` iterations of `kind`'s step; out[0] = a lane of the accumulators'
        sum (so that the loop is not dead code)."""

        def codegen(context, builder, signature, args):
            data_t, out_t = signature.args[0], signature.args[1]
            f32x8 = ir.VectorType(ir.FloatType(), 8)
            if kind == "f32":
                b = builder.load(vector_at(context, builder, data_t, args[0], 0, f32x8), align=1)
                accs = [builder.load(vector_at(context, builder, data_t, args[0], 8 + (i % 4), f32x8), align=1)
                        for i in range(12)]
            else:
                weights = builder.load(vector_at(context, builder, data_t, args[0], 0, I8x32), align=1)
                xs = [builder.load(vector_at(context, builder, data_t, args[0], 4 + 4 * i, I8x32), align=1)
                      for i in range(CHAINS)]
                accs = [ir.Constant(I32x8, [0] * 8)] * CHAINS
            state = [cgutils.alloca_once_value(builder, a) for a in accs]
            vnni = target_has_vnni(context)
            with cgutils.for_range(builder, args[2]):
                current = [builder.load(s) for s in state]
                if kind == "f32":
                    new = [call_llvm(builder, "llvm.fma.v8f32", f32x8, [a, b, b]) for a in current]
                else:
                    new = current
                    for _ in range(ROUNDS):  # weights made opaque anew: no round's products are another's
                        new = _int8_iteration(builder, vnni, kind, _opaque(builder, weights), xs, new)
                for s, value in zip(state, new):
                    builder.store(value, s)
            total = builder.load(state[0])
            for s in state[1:]:
                total = builder.fadd(total, builder.load(s)) if kind == "f32" else builder.add(total, builder.load(s))
            lane = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
            if kind != "f32":
                lane = builder.sitofp(lane, ir.FloatType())
            builder.store(lane, vector_at(context, builder, out_t, args[1], 0, ir.FloatType()))
            return context.get_dummy_value()

        return types.none(data, out, types.int64), codegen

    @njit(parallel=True, cache=True)
    def on_threads(data, out, iterations):
        for t in prange(out.shape[0]):
            run(data, out[t], iterations)

    return on_threads


KERNELS = {kind: _kernel(kind) for kind in STEPS}


@intrinsic
def _target_has_avx2(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(target_has_avx2(context)))

    return types.boolean(), codegen


@njit(cache=True)
def avx2_target() -> bool:
    return _target_has_avx2()


def compute_peak(kind: str, threads: int, iterations: int = 50_000_000, repeats: int = 9) -> float | None:
    """G operations per second of `kind`'s step on `threads` threads (None: not measured here)."""
    if kind != "f32" and not avx2_target():
        return None
    data = np.full(64, 1.0, np.float32) if kind == "f32" else np.ones(4 + 4 * CHAINS + 4, np.float32)
    if kind == "f32":
        data[:8] = 0.999999  # b in fma(acc, b, b): the accumulators stay finite
    else:
        data.view(np.int8)[:] = 3
    numba.set_num_threads(threads)
    out = np.zeros((threads, 1), np.float32)
    seconds = best_time(lambda: KERNELS[kind](data, out, iterations), repeats)
    return STEPS[kind] * iterations * threads / seconds / 1e9


def compute_peaks(threads: int) -> dict[str, float | None]:
    return {kind: compute_peak(kind, threads) for kind in STEPS}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-t", "--threads", default="1,2")
    for threads in [int(t) for t in parser.parse_args().threads.split(",")]:
        peaks = compute_peaks(threads)
        print(f"{threads} thread(s): " + ", ".join(
            f"{kind} {'n/a' if value is None else f'{value:.0f}'} G{'FLOP' if kind == 'f32' else 'OP'}/s"
            for kind, value in peaks.items()))


if __name__ == "__main__":
    main()
