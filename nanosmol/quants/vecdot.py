"""Whole-block dot products in vector IR, one intrinsic per weight type: decode's matvec and
prefill's matmul.

Each quantized type's intrinsic takes one weight block straight from the file's bytes and the
matching stretch of the int8-quantized activation, and keeps everything in vector registers:
the bit fields are cut with 32-byte vector operations, multiplied with vpmaddubsw/vpmaddwd on
AVX2 (plain vector IR elsewhere, `simd.madd_portable`), and only the block's integer sums meet
a float scale. This is the shape of llama.cpp's AVX2 `ggml_vec_dot_q4_K_q8_K` and friends
(scales unpacked with its 32-bit mask trick, the mins against the activation's 32-value sums);
going through an unpacked-codes array on the stack instead cost half the speed.

Prefill's forms take PREFILL_TOKENS activations per weight block: the codes are cut once
and meet every token's block, which is where a batch gains over repeated matvecs. Most types
(`_by_tokens`) take the 8 tokens in the lanes of each vector, as llama.cpp's GEMMs put weight
rows there: each 4 codes are spread over the lanes by one vpshufd and meet 8 tokens in one
multiply, and scales, mins and float work come once per (sub-)block for all 8 (with VNNI a
vpdpbusd per vector; on AVX2 the vpmaddubsw pairs add up in int16, Q8_0's with the sign
trick). Q2_K and Q3_K (`_x8`) keep one token per vector.

Each updates float32 accumulator lanes `acc`, 16 per token: acc[16t : 16t + 16] sums to token
t's dot product (lanes 0-7 the scaled products, 8-15 the mins or offsets, already signed).
F32, F16 and BF16 rows multiply the float activation in acc[0:32]. Every decode intrinsic comes
in two forms, the target's (`x86` when Numba compiles for AVX2; on aarch64 sdot where the
target has the dot-product instructions, NEON's widening multiply and pairwise adds where it
has not) and the portable one, which tests pin together; the prefill forms are pinned to the
decode ones through the matmul tests.
"""

from __future__ import annotations

import functools

from llvmlite import binding as llvm_binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from nanosmol.simd import (ON_AARCH64, I8x32, I16x16, I16x32, I32x8, I32x16, call_llvm, dot4_neon, dot4_sdot,
                           dot_bytes_vnni, dot_pairs_vnni, even_odd, madd_neon, madd_portable, madd_sdot, madd_x86, splat,
                           target_aarch64, target_has_avx2, target_has_vnni, vector_at)

I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
llvm_binding.initialize_native_asmparser()  # for the one instruction written as inline assembly (spread)


def _const(vector_type, value):
    return ir.Constant(vector_type, [value] * vector_type.count)


class _Block:
    """IR helpers bound to one intrinsic's builder: loads from the arrays, the madd of the target."""

    def __init__(self, context, builder, signature, args, portable: bool):
        self.context, self.builder, self.sig, self.args = context, builder, signature, args
        self.madd = madd_portable if portable or not target_has_avx2(context) else madd_x86
        self.x86 = self.madd is madd_x86
        self.vnni = self.x86 and target_has_vnni(context)
        self.aarch64 = None if portable else target_aarch64(context)  # "dotprod", "neon" or None
        if self.aarch64:
            self.madd = madd_sdot if self.aarch64 == "dotprod" else madd_neon
        self.native_halves = self.x86 or ON_AARCH64  # F16C / fcvt

    def halves(self, byte_index, n: int):
        """The n fp16 values at row[byte_index] as <n x float>.

        vcvtph2ps where the target converts halves itself (x86 with AVX2 has F16C, aarch64
        has fcvt); elsewhere exact integer arithmetic, since LLVM would call a runtime helper
        the JIT may not have.
        """
        b = self.builder
        bits = self.load(1, byte_index, ir.VectorType(I16, n))
        if self.native_halves:
            return b.fpext(b.bitcast(bits, ir.VectorType(ir.HalfType(), n)), ir.VectorType(ir.FloatType(), n))
        i32xn, f32xn = ir.VectorType(I32, n), ir.VectorType(ir.FloatType(), n)
        h = b.zext(bits, i32xn)
        c = lambda value: _const(i32xn, value)
        sign = b.shl(b.and_(h, c(0x8000)), c(16))
        exponent, mantissa = b.and_(b.lshr(h, c(10)), c(31)), b.and_(h, c(0x3FF))
        normal = b.or_(b.shl(b.add(exponent, c(112)), c(23)), b.shl(mantissa, c(13)))
        special = b.or_(c(0x7F800000), b.shl(mantissa, c(13)))  # inf, nan
        subnormal = b.bitcast(b.fmul(b.uitofp(mantissa, f32xn), _const(f32xn, 2.0**-24)), i32xn)  # exact
        magnitude = b.select(b.icmp_unsigned("==", exponent, c(31)), special, normal)
        magnitude = b.select(b.icmp_unsigned("==", exponent, c(0)), subnormal, magnitude)
        return b.bitcast(b.or_(sign, magnitude), f32xn)

    def two_halves(self, byte_index):
        """The fp16 pair at row[byte_index] (d and dmin, or d and what follows) as <2 x float>."""
        return self.halves(byte_index, 2)

    def scaled_halves(self, pair, scale, second_sign: float = 1.0):
        """The <2 x float> pair times scale (the second also times second_sign), as two scalars."""
        b = self.builder
        scales = b.fmul(splat(b, scale, ir.VectorType(ir.FloatType(), 2)), ir.Constant(ir.VectorType(ir.FloatType(), 2), [1.0, second_sign]),
                        flags=["fast"])
        pair = b.fmul(pair, scales, flags=["fast"])
        return b.extract_element(pair, ir.Constant(I32, 0)), b.extract_element(pair, ir.Constant(I32, 1))

    def token_x(self, t: int, first=None):
        """Where token t's activation block starts in q8: first (default x_at) + t * x_stride."""
        first, stride = self.args[4] if first is None else first, self.args[5]
        return self.builder.add(first, self.builder.mul(stride, ir.Constant(stride.type, t))) if t else first

    def per_block(self, arg: int, x, block: int, element_type=None):
        """Array argument `arg`'s entry for the activation block of `block` values holding q8[x]
        (its scale, or its sums when element_type is a vector)."""
        index = self.builder.lshr(x, ir.Constant(x.type, block.bit_length() - 1))
        return self.load(arg, index, element_type or ir.FloatType())

    def load(self, arg: int, index, vector_type):
        """vector_type's worth of array argument `arg` from element `index` (an LLVM i64 or int)."""
        b = self.builder
        if not isinstance(index, int) and index.type != ir.IntType(64):
            index = b.sext(index, ir.IntType(64))
        return b.load(vector_at(self.context, b, self.sig.args[arg], self.args[arg], index, vector_type), align=1)

    def load_i32(self, arg: int, byte_index):
        """A little-endian uint32 from byte array argument `arg` at `byte_index` (any alignment)."""
        return self.builder.bitcast(self.load(arg, byte_index, ir.VectorType(I8, 4)), I32)

    def at(self, base, offset: int):
        return self.builder.add(base, ir.Constant(base.type, offset)) if offset else base

    def add_to_lane(self, lane: int, value):
        """acc[lane] += value (a float)."""
        b = self.builder
        p = vector_at(self.context, b, self.sig.args[0], self.args[0], lane, ir.FloatType())
        b.store(b.fadd(b.load(p), value, flags=["fast"]), p)

    def add_to_acc(self, first_lane: int, sums, scale):
        """acc[first_lane : first_lane + len(sums)] += scale * float(sums) for int32 sums."""
        b = self.builder
        floats = ir.VectorType(ir.FloatType(), sums.type.count)
        acc_p = vector_at(self.context, b, self.sig.args[0], self.args[0], first_lane, floats)
        products = b.fmul(b.sitofp(sums, floats), splat(b, scale, floats), flags=["fast"])
        b.store(b.fadd(b.load(acc_p, align=4), products, flags=["fast"]), acc_p, align=4)

    def spread(self, scales, lo: int, hi: int):
        """The int16x16 multiplier of madd from 8 int16 scales: scales[lo] for the block's
        first 16 values, scales[hi] for the rest. On AVX2 one vpshufb of the scales held in
        both 128-bit halves, as llama.cpp does; LLVM's own lowering took two or three shuffles."""
        b = self.builder
        if not self.x86:
            return b.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(I32, 16), [lo] * 8 + [hi] * 8))
        both = b.shuffle_vector(b.bitcast(scales, ir.VectorType(I8, 16)), ir.Constant(ir.VectorType(I8, 16), ir.Undefined),
                                ir.Constant(ir.VectorType(I32, 32), list(range(16)) * 2))
        mask = ir.Constant(I8x32, [2 * lo, 2 * lo + 1] * 8 + [2 * hi, 2 * hi + 1] * 8)
        # As inline assembly: LLVM turns the pshufb intrinsic back into its own shuffles.
        pshufb = ir.InlineAsm(ir.FunctionType(I8x32, [I8x32, I8x32]), "vpshufb $2, $1, $0", "=x,x,x")
        return b.bitcast(b.call(pshufb, [both, mask]), I16x16)

    def madd_acc(self, acc, codes, x, scales):
        """acc + madd(codes, x, scales); with VNNI, vpmaddwd and the add are one vpdpwssd."""
        b = self.builder
        if self.vnni:
            return dot_pairs_vnni(b, acc, call_llvm(b, "llvm.x86.avx2.pmadd.ub.sw", I16x16, [codes, x]), scales)
        return b.add(acc, self.madd(b, codes, x, scales))

    def byte_dots(self, codes, x):
        """int32x8: sums of 4 adjacent codes * x products (uint8 codes, int8 x, no pair above int16); with
        VNNI one vpdpbusd."""
        if self.vnni:
            return dot_bytes_vnni(self.builder, _const(I32x8, 0), codes, x)
        return self.madd(self.builder, codes, x, _const(I16x16, 1))

    def madd16(self, a, c):
        """Adjacent pairs of int16 products summed into int32: vpmaddwd on x86."""
        b, n = self.builder, a.type.count
        if self.x86:
            name = "llvm.x86.avx2.pmadd.wd" if n == 16 else "llvm.x86.sse2.pmadd.wd"
            return call_llvm(b, name, ir.VectorType(I32, n // 2), [a, c])
        products = b.mul(b.sext(a, ir.VectorType(I32, n)), b.sext(c, ir.VectorType(I32, n)))
        return b.add(*even_odd(b, products, n // 2))


DECODE_INT_CHAINS = 4  # independent int32 sums per block in decode (see _zero_sums)


def _zero_sums(tokens: int):
    """Each token's int32x8 block sums, as independent chains to add up at the end. With VNNI
    the multiply and the add are one instruction (vpdpwssd, 4+ cycles): one chain made each
    of a block's 8 wait for the previous one, so decode (one token) keeps 4."""
    return [[_const(I32x8, 0)] * (DECODE_INT_CHAINS if tokens == 1 else 1) for _ in range(tokens)]


def _madd_into(blk: _Block, chains: list, step: int, codes, x, spread):
    """chains[step % len(chains)] += madd(codes, x, spread)."""
    k = step % len(chains)
    chains[k] = blk.madd_acc(chains[k], codes, x, spread)


def _sum_chains(blk: _Block, chains: list):
    return functools.reduce(blk.builder.add, chains)


def _k4_scales_mins(blk: _Block, o):
    """Q4_K/Q5_K's 8 six-bit scales and 8 mins from the 12 bytes at row[o + 4], as two <8 x i8>.

    llama.cpp's trick on three 32-bit words u0, u1, u2: scales 0-3 are u0's low 6 bits,
    mins 0-3 u1's; scales 4-7 are u2's low nibbles with u0's top 2 bits above them, mins 4-7
    u2's high nibbles with u1's top 2 bits. Done on (u0, u1) side by side as one vector.
    """
    b = blk.builder
    i32x2 = ir.VectorType(I32, 2)
    words = b.bitcast(blk.load(1, o, ir.VectorType(I8, 16)), ir.VectorType(I32, 4))  # d|dmin, u0, u1, u2
    pick = lambda *lanes: b.shuffle_vector(words, words, ir.Constant(i32x2, list(lanes)))
    c = lambda *values: ir.Constant(i32x2, list(values) * (2 // len(values)))  # one value: both lanes
    u01, u22 = pick(1, 2), pick(3, 3)
    low = b.and_(u01, c(0x3F3F3F3F))  # scales 0-3, mins 0-3
    top2 = b.shl(b.and_(b.lshr(u01, c(6)), c(0x03030303)), c(4))
    high = b.or_(b.and_(b.lshr(u22, c(0, 4)), c(0x0F0F0F0F)), top2)  # scales 4-7, mins 4-7
    as_bytes = lambda lane: b.bitcast(b.shuffle_vector(low, high, ir.Constant(i32x2, [lane, lane + 2])), ir.VectorType(I8, 8))
    return as_bytes(0), as_bytes(1)


def _dot_k4(five_bits: bool, portable: bool, tokens: int = 1):
    @intrinsic
    def dot_k4(typingctx, acc, row, o, q8, x_at, x_stride, sum32, d256):
        """One Q4_K (or Q5_K) block at row[o] against `tokens` activation blocks of 256 int8 in
        q8, token t's at x_at + t * x_stride, with their scales in d256 and sums of 32 in sum32.

        Block: d, dmin (f16), scales[12], [qh[32]], qs[128]; value = d*scale*code - dmin*min
        per 32-value sub-block. The codes are cut once and meet every token's activation.
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o = args[2]
            xs = [blk.token_x(t) for t in range(tokens)]
            scales, mins = _k4_scales_mins(blk, o)
            scales = b.zext(scales, ir.VectorType(I16, 8))
            sumi = _zero_sums(tokens)
            qs = blk.at(o, 48 if five_bits else 16)
            if five_bits:
                qh = blk.load(1, blk.at(o, 16), I8x32)
            for pair in range(4):  # sub-blocks 2*pair (low nibbles) and 2*pair + 1 (high nibbles)
                packed = blk.load(1, blk.at(qs, 32 * pair), I8x32)
                low = b.and_(packed, _const(I8x32, 15))
                high = b.lshr(packed, _const(I8x32, 4))
                if five_bits:
                    fifth = lambda bit: b.shl(b.and_(b.lshr(qh, _const(I8x32, bit)), _const(I8x32, 1)), _const(I8x32, 4))
                    low, high = b.or_(low, fifth(2 * pair)), b.or_(high, fifth(2 * pair + 1))
                for codes, sub in ((low, 2 * pair), (high, 2 * pair + 1)):
                    spread = blk.spread(scales, sub, sub)
                    for t, x_t in enumerate(xs):
                        _madd_into(blk, sumi[t], sub, codes, blk.load(3, blk.at(x_t, 32 * sub), I8x32), spread)
            d_dmin, mins = blk.two_halves(o), b.zext(mins, ir.VectorType(I16, 8))
            for t, x_t in enumerate(xs):
                d, minus_dmin = blk.scaled_halves(d_dmin, blk.per_block(7, x_t, 256), -1.0)
                blk.add_to_acc(16 * t, _sum_chains(blk, sumi[t]), d)
                blk.add_to_acc(16 * t + 8, blk.madd16(mins, blk.per_block(6, x_t, 32, ir.VectorType(I16, 8))), minus_dmin)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.int64, sum32, d256), codegen

    return dot_k4


def _token_lanes_weights(b, codes, v: int):
    """The weights that meet activation vector v (< 4) of a 32-value sub-block in token-lane
    order (`intdot.in_token_lanes`): the codes' 4-byte group v in lanes 0-3, group v + 4 in
    lanes 4-7, one vpshufd."""
    words = b.bitcast(codes, I32x8)
    lanes = [v] * 4 + [v + 4] * 4
    return b.bitcast(b.shuffle_vector(words, words, ir.Constant(ir.VectorType(I32, 8), lanes)), I8x32)


def _byte_dots_wide(b, codes, x):
    """int32x8: sums of 4 adjacent codes * x products (uint8 codes, int8 x) in int32 throughout."""
    products = b.mul(b.zext(codes, ir.VectorType(I32, 32)), b.sext(x, ir.VectorType(I32, 32)))
    return b.add(*even_odd(b, b.add(*even_odd(b, products, 16)), 8))


def _two_halves(b, scales, vector_type):
    """A vector_type whose first half is scales[0] and second half scales[1] (i32, narrowed)."""
    n = vector_type.count
    lo, hi = (splat(b, s if vector_type.element == I32 else b.trunc(s, vector_type.element), vector_type) for s in scales)
    return b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(I32, n), [0] * (n // 2) + [n] * (n // 2)))


def _sub_block_by_tokens(blk: _Block, codes, q8_arg: int, x_at, max_code: int, scales, signed: bool = False):
    """A 32-value sub-block's codes against 8 tokens in token lanes, times its integer scales
    (scales: the first 16 values' and the last 16's, i32): two int32x8, one per 4 tokens, lane
    i and i + 4 holding token i's sums over the first and the last 16 values. The 4 shuffled
    weight vectors serve both groups of 4 tokens. Without VNNI the vpmaddubsw pairs add up in
    int16 while max_code allows, and vpmaddwd applies the scales. Signed codes (int8, up to
    max_code in magnitude) take llama.cpp's sign trick there: |w| times x with w's sign."""
    b = blk.builder
    w = [_token_lanes_weights(b, codes, v) for v in range(4)]
    if signed:
        magnitudes = [call_llvm(b, "llvm.abs.v32i8", I8x32, [w[v], ir.Constant(ir.IntType(1), 0)]) for v in range(4)]
        pair = lambda v, x: call_llvm(b, "llvm.x86.avx2.pmadd.ub.sw", I16x16,
                                      [magnitudes[v], call_llvm(b, "llvm.x86.avx2.psign.b", I8x32, [x, w[v]])])
    else:
        pair = lambda v, x: call_llvm(b, "llvm.x86.avx2.pmadd.ub.sw", I16x16, [w[v], x])
    result = []
    for quad in range(2):
        x = [blk.load(q8_arg, blk.at(x_at, 128 * quad + 32 * v), I8x32) for v in range(4)]
        if blk.vnni:  # vpdpbusd accumulates: no int16 limit
            dots = functools.reduce(lambda total, v: dot_bytes_vnni(b, total, w[v], x[v]), range(4), _const(I32x8, 0))
            result.append(b.mul(dots, _two_halves(b, scales, I32x8)))
            continue
        per_int16 = 32767 // (2 * max_code * 127)  # vpmaddubsw pairs that add up in int16
        if not blk.x86 or per_int16 == 0:  # plain vector IR
            assert not signed
            dots = functools.reduce(b.add, (_byte_dots_wide(b, w[v], x[v]) for v in range(4)))
            result.append(b.mul(dots, _two_halves(b, scales, I32x8)))
            continue
        sums = None
        for first in range(0, 4, per_int16):
            pairs = [pair(v, x[v]) for v in range(first, min(4, first + per_int16))]
            scaled = blk.madd16(functools.reduce(b.add, pairs), _two_halves(b, scales, I16x16))
            sums = scaled if sums is None else b.add(sums, scaled)
        result.append(sums)
    return result


def _tokens_from_halves(b, quads):
    """int32x8 lane t: token t's sum, from the two quads' (token, half) lanes."""
    pick = lambda first: ir.Constant(ir.VectorType(I32, 8), [first + i for i in range(4)] + [first + 8 + i for i in range(4)])
    return b.add(b.shuffle_vector(quads[0], quads[1], pick(0)), b.shuffle_vector(quads[0], quads[1], pick(4)))


def _row_k4_by_tokens(five_bits: bool, portable: bool = False):
    @intrinsic
    def row_k4(typingctx, sums, row, q8, x_at, d8, s8, n_blocks):
        """Prefill: a whole Q4_K (or Q5_K) row against 8 tokens whose activations are laid out
        token by token in each vector's lanes (`intdot.in_token_lanes`: q8 from x_at, their
        scales d8 and sums of 32 s8 from x_at // 256 and x_at // 32). sums[t] = token t's dot.

        With the tokens in the lanes, a sub-block's 8 vectors of activations meet its codes
        (each 4 bytes spread over the lanes) in 8 multiplies, and scales and mins are applied
        once per sub-block (per block) for all 8 tokens: no horizontal sums, no per-token work.
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            f32x8 = ir.VectorType(ir.FloatType(), 8)
            acc = cgutils.alloca_once_value(b, ir.Constant(f32x8, [0.0] * 8))
            block_bytes = 176 if five_bits else 144
            with cgutils.for_range(b, args[6]) as loop:
                o = b.mul(loop.index, ir.Constant(loop.index.type, block_bytes))
                x0 = b.add(args[3], b.mul(loop.index, ir.Constant(loop.index.type, 256 * 8)))
                scales, mins = (b.zext(m, I32x8) for m in _k4_scales_mins(blk, o))
                qs = blk.at(o, 48 if five_bits else 16)
                if five_bits:
                    qh = blk.load(1, blk.at(o, 16), I8x32)
                quads = [_const(I32x8, 0)] * 2
                for pair in range(4):
                    packed = blk.load(1, blk.at(qs, 32 * pair), I8x32)
                    low, high = b.and_(packed, _const(I8x32, 15)), b.lshr(packed, _const(I8x32, 4))
                    if five_bits:
                        fifth = lambda bit: b.shl(b.and_(b.lshr(qh, _const(I8x32, bit)), _const(I8x32, 1)), _const(I8x32, 4))
                        low, high = b.or_(low, fifth(2 * pair)), b.or_(high, fifth(2 * pair + 1))
                    for codes, sub in ((low, 2 * pair), (high, 2 * pair + 1)):
                        scale = b.extract_element(scales, ir.Constant(I32, sub))
                        dots = _sub_block_by_tokens(blk, codes, 2, blk.at(x0, 256 * sub), 31 if five_bits else 15, (scale, scale))
                        quads = [b.add(total, dot) for total, dot in zip(quads, dots)]
                total = _tokens_from_halves(b, quads)
                # mins: lane t gets sum over sub-blocks of min * token t's sum of 32 (int16 pairs, s8)
                s_at = b.lshr(x0, ir.Constant(x0.type, 5))
                mins16 = b.trunc(b.shuffle_vector(mins, mins, ir.Constant(ir.VectorType(I32, 16), list(range(8)) * 2)), I16x16)
                minsum = _const(I32x8, 0)
                for pair in range(4):
                    sums = blk.load(5, blk.at(s_at, 16 * pair), I16x16)
                    m = b.shuffle_vector(mins16, mins16, ir.Constant(ir.VectorType(I32, 16), [2 * pair, 2 * pair + 1] * 8))
                    minsum = b.add(minsum, blk.madd16(sums, m))
                d, dmin = (b.extract_element(blk.two_halves(o), ir.Constant(I32, i)) for i in (0, 1))
                dx = blk.load(4, b.lshr(x0, ir.Constant(x0.type, 8)), f32x8)
                value = b.fsub(b.fmul(b.sitofp(total, f32x8), splat(b, d, f32x8), flags=["fast"]),
                               b.fmul(b.sitofp(minsum, f32x8), splat(b, dmin, f32x8), flags=["fast"]), flags=["fast"])
                b.store(b.fadd(b.load(acc), b.fmul(value, dx, flags=["fast"]), flags=["fast"]), acc)
            b.store(b.load(acc), vector_at(context, b, signature.args[0], args[0], 0, f32x8), align=4)
            return context.get_dummy_value()

        return types.none(sums, row, q8, types.int64, d8, s8, types.int64), codegen

    return row_k4


def _row_q6_k_by_tokens(portable: bool = False):
    @intrinsic
    def row_q6_k(typingctx, sums, row, q8, x_at, d8, s8, n_blocks):
        """Prefill: a whole Q6_K row against 8 tokens in token lanes, as _row_k4_by_tokens
        (s8: the tokens' sums of 16, `QuantizedVector.sum16_by_8`). Its scales are per 16
        values, which are exactly the two halves of each vector's lanes."""

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            f32x8 = ir.VectorType(ir.FloatType(), 8)
            acc = cgutils.alloca_once_value(b, ir.Constant(f32x8, [0.0] * 8))
            with cgutils.for_range(b, args[6]) as loop:
                o = b.mul(loop.index, ir.Constant(loop.index.type, 210))
                x0 = b.add(args[3], b.mul(loop.index, ir.Constant(loop.index.type, 256 * 8)))
                scales = b.sext(blk.load(1, blk.at(o, 192), ir.VectorType(I8, 16)), ir.VectorType(I32, 16))
                quads = [_const(I32x8, 0)] * 2
                for half in range(2):
                    a = blk.load(1, blk.at(o, 64 * half), I8x32)
                    c = blk.load(1, blk.at(o, 64 * half + 32), I8x32)
                    h = blk.load(1, blk.at(o, 128 + 32 * half), I8x32)
                    nibbles = (b.and_(a, _const(I8x32, 15)), b.and_(c, _const(I8x32, 15)),
                               b.lshr(a, _const(I8x32, 4)), b.lshr(c, _const(I8x32, 4)))
                    for j in range(4):  # sub-block 4 * half + j: values 128 * half + 32 * j + i
                        high2 = b.shl(b.and_(b.lshr(h, _const(I8x32, 2 * j)), _const(I8x32, 3)), _const(I8x32, 4))
                        sub = 4 * half + j
                        pair = tuple(b.extract_element(scales, ir.Constant(I32, 2 * sub + i)) for i in range(2))
                        dots = _sub_block_by_tokens(blk, b.or_(nibbles[j], high2), 2, blk.at(x0, 256 * sub), 63, pair)
                        quads = [b.add(total, dot) for total, dot in zip(quads, dots)]
                total = _tokens_from_halves(b, quads)
                # the -32 of every code: 32 * sum over the 16 sub-blocks of scale * token t's sum of 16
                s_at = b.lshr(x0, ir.Constant(x0.type, 4))
                scales16 = b.trunc(scales, I16x16)
                offsets = _const(I32x8, 0)
                for pair in range(8):
                    x_sums = blk.load(5, blk.at(s_at, 16 * pair), I16x16)
                    m = b.shuffle_vector(scales16, scales16, ir.Constant(ir.VectorType(I32, 16), [2 * pair, 2 * pair + 1] * 8))
                    offsets = b.add(offsets, blk.madd16(x_sums, m))
                total = b.sub(total, b.shl(offsets, _const(I32x8, 5)))
                d = b.extract_element(blk.two_halves(blk.at(o, 206)), ir.Constant(I32, 1))
                dx = blk.load(4, b.lshr(x0, ir.Constant(x0.type, 8)), f32x8)
                value = b.fmul(b.sitofp(total, f32x8), b.fmul(splat(b, d, f32x8), dx, flags=["fast"]), flags=["fast"])
                b.store(b.fadd(b.load(acc), value, flags=["fast"]), acc)
            b.store(b.load(acc), vector_at(context, b, signature.args[0], args[0], 0, f32x8), align=4)
            return context.get_dummy_value()

        return types.none(sums, row, q8, types.int64, d8, s8, types.int64), codegen

    return row_q6_k


def _dot_q6_k(portable: bool, tokens: int = 1):
    @intrinsic
    def dot_q6_k(typingctx, acc, row, o, q8, x_at, x_stride, sum16, d256):
        """One Q6_K block at row[o] against `tokens` activation blocks (as _dot_k4's).

        Block: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, one per 16
        values), d (f16); value = d * scale * (code - 32). The -32 is taken off through the
        activation's sums of 16 (sum16, int16).
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o = args[2]
            xs = [blk.token_x(t) for t in range(tokens)]
            scales = b.sext(blk.load(1, blk.at(o, 192), ir.VectorType(I8, 16)), ir.VectorType(I16, 16))
            sumi = _zero_sums(tokens)
            for half in range(2):
                half_scales = b.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(I32, 8), list(range(8 * half, 8 * half + 8))))
                a = blk.load(1, blk.at(o, 64 * half), I8x32)
                c = blk.load(1, blk.at(o, 64 * half + 32), I8x32)
                h = blk.load(1, blk.at(o, 128 + 32 * half), I8x32)
                high2 = lambda shift: b.shl(b.and_(b.lshr(h, _const(I8x32, shift)), _const(I8x32, 3)), _const(I8x32, 4))
                nibbles = (b.and_(a, _const(I8x32, 15)), b.and_(c, _const(I8x32, 15)),
                           b.lshr(a, _const(I8x32, 4)), b.lshr(c, _const(I8x32, 4)))
                for j in range(4):  # values 128*half + 32*j + i
                    codes = b.or_(nibbles[j], high2(2 * j))
                    spread = blk.spread(half_scales, 2 * j, 2 * j + 1)
                    for t, x_t in enumerate(xs):
                        x = blk.load(3, blk.at(x_t, 128 * half + 32 * j), I8x32)
                        _madd_into(blk, sumi[t], 4 * half + j, codes, x, spread)
            d = b.extract_element(blk.two_halves(blk.at(o, 206)), ir.Constant(I32, 1))
            for t, x_t in enumerate(xs):
                # The -32: 32 * sum over sub-blocks of 16 of scale * (sum of their 16 x values).
                offsets = b.shl(blk.madd16(scales, blk.per_block(6, x_t, 16, I16x16)), _const(I32x8, 5))
                blk.add_to_acc(16 * t, b.sub(_sum_chains(blk, sumi[t]), offsets), b.fmul(d, blk.per_block(7, x_t, 256), flags=["fast"]))
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.int64, sum16, d256), codegen

    return dot_q6_k


def _q3_k_scales(blk: _Block, o):
    """Q3_K's 16 six-bit scales (minus 32) from the 12 bytes at row[o + 96], as <16 x i16>.

    Scale k: low nibble from byte k % 8 (its high nibble for k >= 8), two high bits from
    byte 8 + k % 4 at bit 2 * (k // 4).
    """
    b, i8x16 = blk.builder, ir.VectorType(I8, 16)
    first8 = blk.load(1, blk.at(o, 96), ir.VectorType(I8, 8))
    last4 = b.shuffle_vector(blk.load(1, blk.at(o, 104), ir.VectorType(I8, 4)), ir.Constant(ir.VectorType(I8, 4), ir.Undefined),
                             ir.Constant(ir.VectorType(I32, 8), [0, 1, 2, 3, 0, 1, 2, 3]))
    packed = b.shuffle_vector(first8, last4, ir.Constant(ir.VectorType(I32, 16), list(range(16))))  # no read past the block
    pick = lambda lanes: b.shuffle_vector(packed, packed, ir.Constant(ir.VectorType(I32, 16), lanes))
    low = b.and_(b.lshr(pick(list(range(8)) * 2), ir.Constant(i8x16, [0] * 8 + [4] * 8)), _const(i8x16, 15))
    high = b.and_(b.lshr(pick([8, 9, 10, 11] * 4), ir.Constant(i8x16, [0] * 4 + [2] * 4 + [4] * 4 + [6] * 4)), _const(i8x16, 3))
    scales = b.sub(b.or_(low, b.shl(high, _const(i8x16, 4))), _const(i8x16, 32))
    return b.sext(scales, I16x16)


def _dot_low_k(kind: str, portable: bool, tokens: int = 1):
    @intrinsic
    def dot_low_k(typingctx, acc, row, o, q8, x_at, x_stride, sum16, d256):
        """One Q2_K or Q3_K block at row[o] against `tokens` activation blocks (as _dot_k4's).

        Both hold 2-bit codes in qs[64]: value 32j + i of each 128-value half is bits 2j..2j+1
        of byte i (i < 32), with one scale per 16 values.
        Q2_K: scales[16] (4-bit scale, 4-bit min), qs, d, dmin: d*scale*code - dmin*min.
        Q3_K: hmask[32] (a third bit, set meaning +4), qs, scales[12] (6-bit, minus 32), d:
        d * scale * (code - 4) with the third bit in the code.
        The mins and the -4 come off through the activation's sums of 16 (sum16).
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o = args[2]
            xs = [blk.token_x(t) for t in range(tokens)]
            qs = blk.at(o, 16 if kind == "Q2_K" else 32)
            if kind == "Q2_K":
                packed = blk.load(1, o, ir.VectorType(I8, 16))
                scales = b.zext(b.and_(packed, _const(ir.VectorType(I8, 16), 15)), I16x16)
                mins = b.zext(b.lshr(packed, _const(ir.VectorType(I8, 16), 4)), I16x16)
            else:
                scales = _q3_k_scales(blk, o)
                hmask = blk.load(1, o, I8x32)
            sumi = _zero_sums(tokens)
            for half in range(2):
                q = blk.load(1, blk.at(qs, 32 * half), I8x32)
                half_scales = b.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(I32, 8), list(range(8 * half, 8 * half + 8))))
                for j in range(4):
                    codes = b.and_(b.lshr(q, _const(I8x32, 2 * j)), _const(I8x32, 3))
                    if kind == "Q3_K":
                        bit = b.and_(b.lshr(hmask, _const(I8x32, 4 * half + j)), _const(I8x32, 1))
                        codes = b.or_(codes, b.shl(bit, _const(I8x32, 2)))
                    spread = blk.spread(half_scales, 2 * j, 2 * j + 1)
                    for t, x_t in enumerate(xs):
                        x = blk.load(3, blk.at(x_t, 128 * half + 32 * j), I8x32)
                        _madd_into(blk, sumi[t], 4 * half + j, codes, x, spread)
            for t, x_t in enumerate(xs):
                x_sums, dx = blk.per_block(6, x_t, 16, I16x16), blk.per_block(7, x_t, 256)
                sumi[t] = _sum_chains(blk, sumi[t])
                if kind == "Q2_K":
                    d, minus_dmin = blk.scaled_halves(blk.two_halves(blk.at(o, 80)), dx, -1.0)
                    blk.add_to_acc(16 * t, sumi[t], d)
                    blk.add_to_acc(16 * t + 8, blk.madd16(mins, x_sums), minus_dmin)
                else:
                    d = b.fmul(b.extract_element(blk.two_halves(blk.at(o, 106)), ir.Constant(I32, 1)), dx, flags=["fast"])
                    offsets = b.shl(blk.madd16(scales, x_sums), _const(I32x8, 2))
                    blk.add_to_acc(16 * t, b.sub(sumi[t], offsets), d)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.int64, sum16, d256), codegen

    return dot_low_k


def _signed_madd(blk: _Block, w, x):
    """int32x8: sums of 4 adjacent w * x products for int8x32 w and x.

    On AVX2 llama.cpp's sign trick: |w| (unsigned) times x with w's sign, through vpmaddubsw.
    |w| <= 128 and |x| <= 127, so the pairwise int16 sums cannot saturate.
    """
    b = blk.builder
    if blk.aarch64:  # sdot takes both signed as they are
        return (dot4_sdot if blk.aarch64 == "dotprod" else dot4_neon)(b, w, x)
    if blk.x86:
        magnitude = call_llvm(b, "llvm.abs.v32i8", I8x32, [w, ir.Constant(ir.IntType(1), 0)])
        signed_x = call_llvm(b, "llvm.x86.avx2.psign.b", I8x32, [x, w])
        return blk.byte_dots(magnitude, signed_x)
    products = b.mul(b.sext(w, I16x32), b.sext(x, I16x32))
    pairs = b.sext(b.add(*even_odd(b, products, 16)), I32x16)
    return b.add(*even_odd(b, pairs, 8))


def _q8_0_terms(blk: _Block, o, xs):
    """The Q8_0 block at row[o] (d f16, qs[32] int8) against the activation blocks of 32 int8 at
    q8[x] for each x in xs: each one's int32x8 products, and d (no offset)."""
    w = blk.load(1, blk.at(o, 2), I8x32)
    d = blk.builder.extract_element(blk.two_halves(o), ir.Constant(I32, 0))
    return [_signed_madd(blk, w, blk.load(3, x, I8x32)) for x in xs], d, None


# Where a 32-value type's packed nibbles and (for Q5) its 32 fifth bits start in its block.
BLOCK32_LAYOUT = {"Q4_0": (2, None), "Q4_1": (4, None), "Q5_0": (6, 2), "Q5_1": (8, 4)}


def _block32_codes(type_name: str):
    """The codes (uint8x32), d and m of a 32-value block at row[o]: its values are d * code + m.

    Q4_0/Q4_1/Q5_0/Q5_1: value i < 16 in the low nibble of byte i, value 16 + i in its high
    nibble, plus bit i of qh times 16 for the 5-bit types; m = -8d (Q4_0), -16d (Q5_0) or the
    block's own (Q4_1, Q5_1). Q8_0 (d, qs[32] int8): code = q + 128 and m = -128d, so that it
    too multiplies unsigned codes (token-lane prefill)."""

    def codes_of(blk: _Block, o):
        b, i8x16 = blk.builder, ir.VectorType(I8, 16)
        d_m = blk.two_halves(o)  # d and m (else d and what follows it)
        d = b.extract_element(d_m, ir.Constant(I32, 0))
        if type_name == "Q8_0":
            codes = b.xor(blk.load(1, blk.at(o, 2), I8x32), _const(I8x32, 0x80))
            return codes, d, b.fmul(d, ir.Constant(ir.FloatType(), -128.0), flags=["fast"])
        qs_at, qh_at = BLOCK32_LAYOUT[type_name]
        packed = blk.load(1, blk.at(o, qs_at), i8x16)
        low, high = b.and_(packed, _const(i8x16, 15)), b.lshr(packed, _const(i8x16, 4))
        codes = b.shuffle_vector(low, high, ir.Constant(ir.VectorType(I32, 32), list(range(32))))
        if qh_at is not None:
            bits = b.bitcast(blk.load_i32(1, blk.at(o, qh_at)), ir.VectorType(ir.IntType(1), 32))
            codes = b.or_(codes, b.select(bits, _const(I8x32, 16), _const(I8x32, 0)))
        if type_name in ("Q4_0", "Q5_0"):
            return codes, d, b.fmul(d, ir.Constant(ir.FloatType(), -8.0 if type_name == "Q4_0" else -16.0), flags=["fast"])
        return codes, d, b.extract_element(d_m, ir.Constant(I32, 1))

    return codes_of


def _block32_terms(type_name: str):
    """A Q4_0/Q4_1/Q5_0/Q5_1 block at row[o] against the activation blocks at q8[x] for each x
    in xs: each one's int32x8 code sums, and the block's d and m. The dot product is
    d * dx * (codes . q8) plus m * sx, sx being the activation block's sum (dx times its int8 sum).
    """
    codes_of = _block32_codes(type_name)

    def terms(blk: _Block, o, xs):
        codes, d, m = codes_of(blk, o)
        return [blk.byte_dots(codes, blk.load(3, x, I8x32)) for x in xs], d, m

    return terms


def _row32_by_tokens(type_name: str, block_bytes: int, portable: bool = False, groups: int = 1):
    codes_of = _block32_codes(type_name)
    max_code = {"Q4_0": 15, "Q4_1": 15, "Q5_0": 31, "Q5_1": 31, "Q8_0": 255}[type_name]

    def codegen(context, builder, signature, args):
        blk, b = _Block(context, builder, signature, args, portable), builder
        f32x8, one = ir.VectorType(ir.FloatType(), 8), ir.Constant(I32, 1)
        signed = type_name == "Q8_0" and blk.x86 and not blk.vnni  # its int8 as they are: the sign trick
        accs = [cgutils.alloca_once_value(b, ir.Constant(f32x8, [0.0] * 8)) for _ in range(groups)]
        with cgutils.for_range(b, args[6]) as loop:
            o = b.mul(loop.index, ir.Constant(loop.index.type, block_bytes))
            codes, d, m = codes_of(blk, o)
            if signed:
                codes, m = blk.load(1, blk.at(o, 2), I8x32), None
            for group, acc in enumerate(accs):  # the codes' shuffles (and |w|) are made once for all
                x0 = b.add(args[3], b.mul(loop.index, ir.Constant(loop.index.type, 32 * 8)))
                if group:
                    x0 = b.add(x0, b.mul(args[7], ir.Constant(args[7].type, group)))
                quads = _sub_block_by_tokens(blk, codes, 2, x0, 128 if signed else max_code, (one, one), signed)
                total = _tokens_from_halves(b, quads)
                at = b.lshr(x0, ir.Constant(x0.type, 5))
                products = b.fmul(b.sitofp(total, f32x8), b.fmul(splat(b, d, f32x8), blk.load(4, at, f32x8), flags=["fast"]),
                                  flags=["fast"])
                if m is not None:
                    products = b.fadd(products, b.fmul(splat(b, m, f32x8), blk.load(5, at, f32x8), flags=["fast"]),
                                      flags=["fast"])
                b.store(b.fadd(b.load(acc), products, flags=["fast"]), acc)
        for group, acc in enumerate(accs):
            b.store(b.load(acc), vector_at(context, b, signature.args[0], args[0], 8 * group, f32x8), align=4)
        return context.get_dummy_value()

    if groups > 1:
        @intrinsic
        def row32_groups(typingctx, sums, row, q8, x_at, d8, s8, n_blocks, group_stride):
            """row32 for `groups` groups of 8 tokens at once, group g's activations from
            x_at + g * group_stride: sums[8g + t] = token t of group g's dot product."""
            return types.none(sums, row, q8, types.int64, d8, s8, types.int64, types.int64), codegen

        return row32_groups

    @intrinsic
    def row32(typingctx, sums, row, q8, x_at, d8, s8, n_blocks):
        """Prefill: a whole row of 32-value blocks against 8 tokens in token lanes (q8 from x_at:
        `QuantizedVector.q32_by_8`; their scales and sums side by side in d8 and s8 from
        x_at // 32). sums[t] = token t's dot product. Q8_0's codes are its int8 plus 128 for
        vpdpbusd (VNNI); on AVX2 without it they stay int8 and take the sign trick."""
        return types.none(sums, row, q8, types.int64, d8, s8, types.int64), codegen

    return row32


def _dot32(terms, portable: bool):
    @intrinsic
    def dot32(typingctx, acc, row, o, q8, x_at, x_stride, d32, s32):
        """Decode: one 32-value block at row[o] against the activation block at q8[x_at] (its
        scale d32 and sum s32 at x_at // 32): acc[0:8] += the scaled products, acc[8] += m * sx."""

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            (sums,), d, m = terms(blk, args[2], [args[4]])
            blk.add_to_acc(0, sums, b.fmul(d, blk.per_block(6, args[4], 32), flags=["fast"]))
            if m is not None:
                blk.add_to_lane(8, b.fmul(m, blk.per_block(7, args[4], 32), flags=["fast"]))
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.int64, d32, s32), codegen

    return dot32


def _float_values(blk: _Block, kind: str, byte_index):
    """The 32 F32, F16 or BF16 values at row[byte_index] (array argument 1) as <32 x float>.
    The halves convert 32 at a time (vcvtph2ps); bfloat16 is a float32's top half."""
    b, f32x32 = blk.builder, ir.VectorType(ir.FloatType(), 32)
    if kind == "F16":
        return blk.halves(byte_index, 32)
    if kind == "BF16":
        bits = b.zext(blk.load(1, byte_index, ir.VectorType(I16, 32)), ir.VectorType(I32, 32))
        return b.bitcast(b.shl(bits, _const(ir.VectorType(I32, 32), 16)), f32x32)
    return b.bitcast(blk.load(1, byte_index, ir.VectorType(I32, 32)), f32x32)


def _dot_float(kind: str, portable: bool):
    @intrinsic
    def dot_float(typingctx, acc, row, o, x, x_at):
        """acc[0:32] += w * x[x_at : x_at + 32] for 32 weights at row[o]: F32, F16 or BF16 bytes."""

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            f32x32 = ir.VectorType(ir.FloatType(), 32)
            w = _float_values(blk, kind, args[2])
            acc_p = vector_at(context, b, signature.args[0], args[0], 0, f32x32)
            products = b.fmul(w, blk.load(3, args[4], f32x32), flags=["fast"])
            b.store(b.fadd(b.load(acc_p, align=4), products, flags=["fast"]), acc_p, align=4)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, x, types.int64), codegen

    return dot_float


def _store_float(kind: str, portable: bool):
    @intrinsic
    def store_float(typingctx, out, row, o, out_at):
        """out[out_at : out_at + 32] = the 32 F32 or F16 values at row[o] (bytes), converted
        as dot_float converts them (a loop of table lookups would take one half at a time)."""

        def codegen(context, builder, signature, args):
            blk = _Block(context, builder, signature, args, portable)
            f32x32 = ir.VectorType(ir.FloatType(), 32)
            out_p = vector_at(context, builder, signature.args[0], args[0], args[3], f32x32)
            builder.store(_float_values(blk, kind, args[2]), out_p, align=4)
            return context.get_dummy_value()

        return types.none(out, row, types.int64, types.int64), codegen

    return store_float


PREFILL_TOKENS = 8  # the activation blocks each prefill intrinsic takes per weight block


def _forms(make, *args):
    """A k-quant's decode intrinsic (target and portable forms) and its prefill one, for
    PREFILL_TOKENS tokens (pinned to the decode forms through the matmul tests)."""
    return make(*args, False), make(*args, True), make(*args, False, PREFILL_TOKENS)


dot_q4_k, dot_q4_k_portable = _dot_k4(False, False), _dot_k4(False, True)
dot_q5_k, dot_q5_k_portable = _dot_k4(True, False), _dot_k4(True, True)
dot_q6_k, dot_q6_k_portable = _dot_q6_k(False), _dot_q6_k(True)
row_q4_k_by_tokens, row_q4_k_by_tokens_portable = _row_k4_by_tokens(False), _row_k4_by_tokens(False, True)
row_q5_k_by_tokens, row_q5_k_by_tokens_portable = _row_k4_by_tokens(True), _row_k4_by_tokens(True, True)
row_q6_k_by_tokens, row_q6_k_by_tokens_portable = _row_q6_k_by_tokens(), _row_q6_k_by_tokens(True)
dot_q2_k, dot_q2_k_portable, dot_q2_k_x8 = _forms(_dot_low_k, "Q2_K")
dot_q3_k, dot_q3_k_portable, dot_q3_k_x8 = _forms(_dot_low_k, "Q3_K")
dot_q8_0, dot_q8_0_portable = _dot32(_q8_0_terms, False), _dot32(_q8_0_terms, True)
dot_q4_0, dot_q4_0_portable = _dot32(_block32_terms("Q4_0"), False), _dot32(_block32_terms("Q4_0"), True)
dot_q4_1, dot_q4_1_portable = _dot32(_block32_terms("Q4_1"), False), _dot32(_block32_terms("Q4_1"), True)
dot_q5_0, dot_q5_0_portable = _dot32(_block32_terms("Q5_0"), False), _dot32(_block32_terms("Q5_0"), True)
dot_q5_1, dot_q5_1_portable = _dot32(_block32_terms("Q5_1"), False), _dot32(_block32_terms("Q5_1"), True)
row_q8_0_by_tokens, row_q8_0_by_tokens_portable = _row32_by_tokens("Q8_0", 34), _row32_by_tokens("Q8_0", 34, True)
# Q8_0 prepares its blocks with the most instructions per product on AVX2 (4 shuffles and 4 |w|
# for 8 tokens' 256 products, beside 8 vpsignb, vpmaddubsw and vpmaddwd): prefill takes 16 of
# them at once where it can (the 3B shapes, 512 tokens, AVX2: 118-131 -> 140-145 GFLOP/s).
row_q8_0_by_16_tokens = _row32_by_tokens("Q8_0", 34, groups=2)
row_q4_0_by_tokens, row_q4_0_by_tokens_portable = _row32_by_tokens("Q4_0", 18), _row32_by_tokens("Q4_0", 18, True)
row_q4_1_by_tokens, row_q4_1_by_tokens_portable = _row32_by_tokens("Q4_1", 20), _row32_by_tokens("Q4_1", 20, True)
row_q5_0_by_tokens, row_q5_0_by_tokens_portable = _row32_by_tokens("Q5_0", 22), _row32_by_tokens("Q5_0", 22, True)
row_q5_1_by_tokens, row_q5_1_by_tokens_portable = _row32_by_tokens("Q5_1", 24), _row32_by_tokens("Q5_1", 24, True)
dot_f32, dot_f32_portable = _dot_float("F32", False), _dot_float("F32", True)
dot_f16, dot_f16_portable = _dot_float("F16", False), _dot_float("F16", True)
dot_bf16, dot_bf16_portable = _dot_float("BF16", False), _dot_float("BF16", True)
store_f32, store_f32_portable = _store_float("F32", False), _store_float("F32", True)
store_f16, store_f16_portable = _store_float("F16", False), _store_float("F16", True)
