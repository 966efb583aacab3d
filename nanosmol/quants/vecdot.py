"""Whole-block dot products in vector IR, one intrinsic per weight type: the matvec of decode.

Each quantized type's intrinsic takes one weight block straight from the file's bytes and the
matching stretch of the int8-quantized activation, and keeps everything in vector registers:
the bit fields are cut with 32-byte vector operations, multiplied with vpmaddubsw/vpmaddwd on
AVX2 (plain vector IR elsewhere, `simd.madd_portable`), and only the block's integer sums meet
a float scale. This is
the shape of llama.cpp's AVX2 `ggml_vec_dot_q4_K_q8_K` and friends (scales unpacked with its
32-bit mask trick, the mins against the activation's 32-value sums); going through an
unpacked-codes array on the stack instead cost half the speed.

Each updates float32 accumulator lanes `acc` (a `simd.stack_lanes()`): acc[0:8] gathers the
scaled products, acc[8:16] the k-quants' mins (subtracted) or the 32-value types' offsets (added,
lane 8); the row functions in intdot.py say which. F32, F16 and BF16 rows multiply the float
activation in acc[0:32]. Every intrinsic comes in two forms, the target's (`x86` when Numba
compiles for AVX2) and the portable one, which tests pin together.
"""

from __future__ import annotations

import platform

from llvmlite import binding as llvm_binding, ir
from numba import types
from numba.extending import intrinsic

from nanosmol.simd import (I8x32, I16x16, I16x32, I32x8, I32x16, call_llvm, even_odd, madd_portable, madd_x86,
                           splat, target_has_avx2, vector_at)

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
        self.native_halves = self.x86 or platform.machine() in ("aarch64", "arm64")  # F16C / fcvt

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

    def scaled_halves(self, byte_index, scale):
        """two_halves(byte_index) * scale, as two float scalars."""
        b = self.builder
        pair = b.fmul(self.two_halves(byte_index), splat(b, scale, ir.VectorType(ir.FloatType(), 2)), flags=["fast"])
        return b.extract_element(pair, ir.Constant(I32, 0)), b.extract_element(pair, ir.Constant(I32, 1))

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

    def madd16(self, a, c):
        """Adjacent pairs of int16 products summed into int32: vpmaddwd on x86."""
        b, n = self.builder, a.type.count
        if self.x86:
            name = "llvm.x86.avx2.pmadd.wd" if n == 16 else "llvm.x86.sse2.pmadd.wd"
            return call_llvm(b, name, ir.VectorType(I32, n // 2), [a, c])
        products = b.mul(b.sext(a, ir.VectorType(I32, n)), b.sext(c, ir.VectorType(I32, n)))
        return b.add(*even_odd(b, products, n // 2))


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


def _dot_k4(five_bits: bool, portable: bool):
    @intrinsic
    def dot_k4(typingctx, acc, row, o, q8, x_at, sum32, dx):
        """One Q4_K (or Q5_K) block at row[o] against q8[x_at : x_at + 256] (int8, scale dx).

        Block: d, dmin (f16), scales[12], [qh[32]], qs[128]; value = d*scale*code - dmin*min
        per 32-value sub-block.
        sum32: the activation's sums of 32 values (int16), from x_at // 32.
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o, x_at = args[2], args[4]
            scales, mins = _k4_scales_mins(blk, o)
            scales = b.zext(scales, ir.VectorType(I16, 8))
            sumi = ir.Constant(I32x8, [0] * 8)
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
                    x = blk.load(3, blk.at(x_at, 32 * sub), I8x32)
                    sumi = b.add(sumi, blk.madd(b, codes, x, blk.spread(scales, sub, sub)))
            d, dmin = blk.scaled_halves(o, args[6])
            blk.add_to_acc(0, sumi, d)
            x_sums = blk.load(5, b.sdiv(x_at, ir.Constant(x_at.type, 32)), ir.VectorType(I16, 8))
            blk.add_to_acc(8, blk.madd16(b.zext(mins, ir.VectorType(I16, 8)), x_sums), dmin)
            return context.get_dummy_value()

        sig = types.none(acc, row, types.int64, q8, types.int64, sum32, types.float32)
        return sig, codegen

    return dot_k4


def _dot_q6_k(portable: bool):
    @intrinsic
    def dot_q6_k(typingctx, acc, row, o, q8, x_at, sum16, dx):
        """One Q6_K block at row[o] against q8[x_at : x_at + 256] (int8, scale dx).

        Block: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, one per 16
        values), d (f16); value = d * scale * (code - 32). The -32 is taken off through the
        activation's sums of 16 (sum16, int16, from x_at // 16).
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o, x_at = args[2], args[4]
            scales = b.sext(blk.load(1, blk.at(o, 192), ir.VectorType(I8, 16)), ir.VectorType(I16, 16))
            sumi = ir.Constant(I32x8, [0] * 8)
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
                    x = blk.load(3, blk.at(x_at, 128 * half + 32 * j), I8x32)
                    sumi = b.add(sumi, blk.madd(b, codes, x, blk.spread(half_scales, 2 * j, 2 * j + 1)))
            # The -32: 32 * sum over sub-blocks of 16 of scale * (sum of their 16 x values).
            x_sums = blk.load(5, b.sdiv(x_at, ir.Constant(x_at.type, 16)), I16x16)
            offsets = b.shl(blk.madd16(scales, x_sums), _const(I32x8, 5))
            d = b.fmul(b.extract_element(blk.two_halves(blk.at(o, 206)), ir.Constant(I32, 1)), args[6], flags=["fast"])
            blk.add_to_acc(0, b.sub(sumi, offsets), d)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, sum16, types.float32), codegen

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


def _dot_low_k(kind: str, portable: bool):
    @intrinsic
    def dot_low_k(typingctx, acc, row, o, q8, x_at, sum16, dx):
        """One Q2_K or Q3_K block at row[o] against q8[x_at : x_at + 256] (int8, scale dx).

        Both hold 2-bit codes in qs[64]: value 32j + i of each 128-value half is bits 2j..2j+1
        of byte i (i < 32), with one scale per 16 values.
        Q2_K: scales[16] (4-bit scale, 4-bit min), qs, d, dmin: d*scale*code - dmin*min.
        Q3_K: hmask[32] (a third bit, set meaning +4), qs, scales[12] (6-bit, minus 32), d:
        d * scale * (code - 4) with the third bit in the code.
        The mins and the -4 come off through the activation's sums of 16 (sum16 from x_at // 16).
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            o, x_at = args[2], args[4]
            qs = blk.at(o, 16 if kind == "Q2_K" else 32)
            if kind == "Q2_K":
                packed = blk.load(1, o, ir.VectorType(I8, 16))
                scales = b.zext(b.and_(packed, _const(ir.VectorType(I8, 16), 15)), I16x16)
                mins = b.zext(b.lshr(packed, _const(ir.VectorType(I8, 16), 4)), I16x16)
            else:
                scales = _q3_k_scales(blk, o)
                hmask = blk.load(1, o, I8x32)
            sumi = ir.Constant(I32x8, [0] * 8)
            for half in range(2):
                q = blk.load(1, blk.at(qs, 32 * half), I8x32)
                half_scales = b.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(I32, 8), list(range(8 * half, 8 * half + 8))))
                for j in range(4):
                    codes = b.and_(b.lshr(q, _const(I8x32, 2 * j)), _const(I8x32, 3))
                    if kind == "Q3_K":
                        bit = b.and_(b.lshr(hmask, _const(I8x32, 4 * half + j)), _const(I8x32, 1))
                        codes = b.or_(codes, b.shl(bit, _const(I8x32, 2)))
                    x = blk.load(3, blk.at(x_at, 128 * half + 32 * j), I8x32)
                    sumi = b.add(sumi, blk.madd(b, codes, x, blk.spread(half_scales, 2 * j, 2 * j + 1)))
            x_sums = blk.load(5, b.sdiv(x_at, ir.Constant(x_at.type, 16)), I16x16)
            if kind == "Q2_K":
                d, dmin = blk.scaled_halves(blk.at(o, 80), args[6])
                blk.add_to_acc(0, sumi, d)
                blk.add_to_acc(8, blk.madd16(mins, x_sums), dmin)
            else:
                d = b.fmul(b.extract_element(blk.two_halves(blk.at(o, 106)), ir.Constant(I32, 1)), args[6], flags=["fast"])
                offsets = b.shl(blk.madd16(scales, x_sums), _const(I32x8, 2))
                blk.add_to_acc(0, b.sub(sumi, offsets), d)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, sum16, types.float32), codegen

    return dot_low_k


def _signed_madd(blk: _Block, w, x):
    """int32x8: sums of 4 adjacent w * x products for int8x32 w and x.

    On AVX2 llama.cpp's sign trick: |w| (unsigned) times x with w's sign, through vpmaddubsw.
    |w| <= 128 and |x| <= 127, so the pairwise int16 sums cannot saturate.
    """
    b = blk.builder
    if blk.x86:
        magnitude = call_llvm(b, "llvm.abs.v32i8", I8x32, [w, ir.Constant(ir.IntType(1), 0)])
        signed_x = call_llvm(b, "llvm.x86.avx2.psign.b", I8x32, [x, w])
        return madd_x86(b, magnitude, signed_x, _const(I16x16, 1))
    products = b.mul(b.sext(w, I16x32), b.sext(x, I16x32))
    pairs = b.sext(b.add(*even_odd(b, products, 16)), I32x16)
    return b.add(*even_odd(b, pairs, 8))


def _dot_q8_0(portable: bool):
    @intrinsic
    def dot_q8_0(typingctx, acc, row, o, q8, x_at, dx):
        """One Q8_0 block at row[o] (d f16, qs[32] int8) against q8[x_at : x_at + 32] (scale dx)."""

        def codegen(context, builder, signature, args):
            blk = _Block(context, builder, signature, args, portable)
            w = blk.load(1, blk.at(args[2], 2), I8x32)
            x = blk.load(3, args[4], I8x32)
            d = blk.scaled_halves(args[2], args[5])[0]
            blk.add_to_acc(0, _signed_madd(blk, w, x), d)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.float32), codegen

    return dot_q8_0


# Where a 32-value type's packed nibbles and (for Q5) its 32 fifth bits start in its block.
BLOCK32_LAYOUT = {"Q4_0": (2, None), "Q4_1": (4, None), "Q5_0": (6, 2), "Q5_1": (8, 4)}


def _dot_block32(type_name: str, portable: bool):
    qs_at, qh_at = BLOCK32_LAYOUT[type_name]

    @intrinsic
    def dot_block32(typingctx, acc, row, o, q8, x_at, dx, sx):
        """One Q4_0/Q4_1/Q5_0/Q5_1 block at row[o] against q8[x_at : x_at + 32] (scale dx).

        Codes: value i < 16 in the low nibble of byte i, value 16 + i in its high nibble, plus
        bit i of qh times 16 for the 5-bit types; values d * code + m, with m = -8d (Q4_0),
        -16d (Q5_0) or the block's own (Q4_1, Q5_1). acc[0:8] += d * dx * (codes . q8) and
        acc[8] += m * sx, where sx is the activation block's sum (dx times its int8 sum).
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            i8x16 = ir.VectorType(I8, 16)
            packed = blk.load(1, blk.at(args[2], qs_at), i8x16)
            low, high = b.and_(packed, _const(i8x16, 15)), b.lshr(packed, _const(i8x16, 4))
            codes = b.shuffle_vector(low, high, ir.Constant(ir.VectorType(I32, 32), list(range(32))))
            if qh_at is not None:
                bits = b.bitcast(blk.load_i32(1, blk.at(args[2], qh_at)), ir.VectorType(ir.IntType(1), 32))
                codes = b.or_(codes, b.select(bits, _const(I8x32, 16), _const(I8x32, 0)))
            x = blk.load(3, args[4], I8x32)
            d_m = blk.two_halves(args[2])  # d and m (for Q4_0 / Q5_0: d and the first code bytes)
            d = b.extract_element(d_m, ir.Constant(I32, 0))
            if type_name in ("Q4_0", "Q5_0"):
                m = b.fmul(d, ir.Constant(ir.FloatType(), -8.0 if type_name == "Q4_0" else -16.0), flags=["fast"])
            else:
                m = b.extract_element(d_m, ir.Constant(I32, 1))
            blk.add_to_acc(0, blk.madd(b, codes, x, _const(I16x16, 1)), b.fmul(d, args[5], flags=["fast"]))
            lane8 = vector_at(context, b, signature.args[0], args[0], 8, ir.FloatType())
            b.store(b.fadd(b.load(lane8), b.fmul(m, args[6], flags=["fast"]), flags=["fast"]), lane8)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, q8, types.int64, types.float32, types.float32), codegen

    return dot_block32


def _dot_float(kind: str, portable: bool):
    @intrinsic
    def dot_float(typingctx, acc, row, o, x, x_at):
        """acc[0:32] += w * x[x_at : x_at + 32] for 32 weights at row[o]: F32, F16 or BF16 bytes.

        The halves convert 32 at a time (vcvtph2ps); bfloat16 is a float32's top half.
        """

        def codegen(context, builder, signature, args):
            blk, b = _Block(context, builder, signature, args, portable), builder
            f32x32 = ir.VectorType(ir.FloatType(), 32)
            if kind == "F16":
                w = blk.halves(args[2], 32)
            elif kind == "BF16":
                bits = b.zext(blk.load(1, args[2], ir.VectorType(I16, 32)), ir.VectorType(I32, 32))
                w = b.bitcast(b.shl(bits, _const(ir.VectorType(I32, 32), 16)), f32x32)
            else:
                w = b.bitcast(blk.load(1, args[2], ir.VectorType(I32, 32)), f32x32)
            acc_p = vector_at(context, b, signature.args[0], args[0], 0, f32x32)
            products = b.fmul(w, blk.load(3, args[4], f32x32), flags=["fast"])
            b.store(b.fadd(b.load(acc_p, align=4), products, flags=["fast"]), acc_p, align=4)
            return context.get_dummy_value()

        return types.none(acc, row, types.int64, x, types.int64), codegen

    return dot_float


dot_q4_k, dot_q4_k_portable = _dot_k4(False, False), _dot_k4(False, True)
dot_q5_k, dot_q5_k_portable = _dot_k4(True, False), _dot_k4(True, True)
dot_q6_k, dot_q6_k_portable = _dot_q6_k(False), _dot_q6_k(True)
dot_q8_0, dot_q8_0_portable = _dot_q8_0(False), _dot_q8_0(True)
dot_q4_0, dot_q4_0_portable = _dot_block32("Q4_0", False), _dot_block32("Q4_0", True)
dot_q4_1, dot_q4_1_portable = _dot_block32("Q4_1", False), _dot_block32("Q4_1", True)
dot_q5_0, dot_q5_0_portable = _dot_block32("Q5_0", False), _dot_block32("Q5_0", True)
dot_q5_1, dot_q5_1_portable = _dot_block32("Q5_1", False), _dot_block32("Q5_1", True)
dot_f32, dot_f32_portable = _dot_float("F32", False), _dot_float("F32", True)
dot_f16, dot_f16_portable = _dot_float("F16", False), _dot_float("F16", True)
dot_bf16, dot_bf16_portable = _dot_float("BF16", False), _dot_float("BF16", True)
dot_q2_k, dot_q2_k_portable = _dot_low_k("Q2_K", False), _dot_low_k("Q2_K", True)
dot_q3_k, dot_q3_k_portable = _dot_low_k("Q3_K", False), _dot_low_k("Q3_K", True)
