"""What Numba cannot say by itself: arrays on the stack, and vector int8 arithmetic.

These are `@intrinsic`s that emit LLVM IR directly. Stack arrays matter because LLVM must
assume a heap array may alias the weights, so it stores and reloads it on every block; an
`alloca` it keeps in registers. The int8 helpers matter because Numba types integer
arithmetic as int64, so a plain int8 dot-product loop never becomes vpmaddubsw/vpmaddwd,
and byte loops next to other reads of a block came out scalar. Each helper works on one
32-value block at the start of (or at an offset into) its arrays.
"""

from __future__ import annotations

import numba
from llvmlite import binding as llvm_binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")


def _stack_pointer(nbtype, size: int):
    """An intrinsic returning a pointer to `size` values of `nbtype` on the caller's stack."""

    @intrinsic
    def alloca(typingctx):
        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_value_type(nbtype), size=size)

        return types.CPointer(nbtype)(), codegen

    return alloca


_float32x32 = _stack_pointer(types.float32, 32)
_int32x8 = _stack_pointer(types.int32, 8)
_uint8x128 = _stack_pointer(types.uint8, 128)


@njit(**INLINE)
def stack_lanes():
    """32 float32 accumulator lanes on the stack of the calling kernel (kept in registers)."""
    return numba.carray(_float32x32(), 32)


@njit(**INLINE)
def stack_int_lanes():
    """8 int32 accumulator lanes for madd_block."""
    return numba.carray(_int32x8(), 8)


@njit(**INLINE)
def stack_codes():
    """128 bytes for a block's unpacked integer codes."""
    return numba.carray(_uint8x128(), 128)


def _has_avx2(context) -> bool:
    features = getattr(context.codegen(), "_tm_features", None) or llvm_binding.get_host_cpu_features().flatten()
    return "+avx2" in features.split(",")


def _vector_at(context, builder, array_type, array, index, vector_type):
    """A pointer to the `vector_type` starting at array[index] (index: an LLVM i64, or 0)."""
    data = context.make_array(array_type)(context, builder, array).data
    if isinstance(index, int):
        index = ir.Constant(ir.IntType(64), index)
    return builder.bitcast(builder.gep(data, [index]), vector_type.as_pointer())


def _call(builder, name: str, result_type, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(result_type, [a.type for a in args]), name)
    return builder.call(fn, args)


def _splat(builder, value, vector_type):
    """A vector with every element `value`."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count))


def _even_odd(builder, vector, n: int):
    """The even and the odd elements of a vector of 2n, as two vectors of n."""
    index = lambda first: ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(first, 2 * n, 2)))
    return builder.shuffle_vector(vector, vector, index(0)), builder.shuffle_vector(vector, vector, index(1))


I8x32, I16x16, I16x32, I32x8, I32x16 = (ir.VectorType(ir.IntType(b), n) for b, n in
                                        ((8, 32), (16, 16), (16, 32), (32, 8), (32, 16)))
F32x8 = ir.VectorType(ir.FloatType(), 8)


def _int16(builder, value, nbtype):
    """An integer argument of any Numba integer type as an LLVM i16."""
    if nbtype.bitwidth > 16:
        return builder.trunc(value, ir.IntType(16))
    if nbtype.bitwidth < 16:
        return (builder.sext if nbtype.signed else builder.zext)(value, ir.IntType(16))
    return value


def _madd_x86(builder, codes, x, scales):
    """vpmaddubsw then vpmaddwd: llama.cpp's AVX2 inner step."""
    pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", I16x16, [codes, x])
    return _call(builder, "llvm.x86.avx2.pmadd.wd", I32x8, [pairs, scales])


def _madd_portable(builder, codes, x, scales):
    """The same sums in plain vector IR, for every other target (LLVM picks the instructions)."""
    products = builder.mul(builder.zext(codes, I16x32), builder.sext(x, I16x32))
    pairs = builder.add(*_even_odd(builder, products, 16))
    scaled = builder.mul(builder.sext(pairs, I32x16), builder.sext(scales, I32x16))
    return builder.add(*_even_odd(builder, scaled, 8))


def _madd_block(portable: bool):
    @intrinsic
    def madd_block(typingctx, lanes, codes, codes_at, x, x_at, scale_lo, scale_hi):
        """lanes[k] += sum over i in 4k..4k+3 of codes[codes_at + i] * x[x_at + i] * scale(i), k < 8.

        codes: 32 unsigned values below 64 (a weight block's codes); x: 32 int8 in -127..127
        (the quantized activation); scale(i) = scale_lo for i < 16, else scale_hi (int8 range:
        Q6_K's 16-value scales). In those ranges nothing saturates, so both paths agree exactly.
        """

        def codegen(context, builder, signature, args):
            lanes_p = _vector_at(context, builder, signature.args[0], args[0], 0, I32x8)
            c = builder.load(_vector_at(context, builder, signature.args[1], args[1], args[2], I8x32), align=1)
            v = builder.load(_vector_at(context, builder, signature.args[3], args[3], args[4], I8x32), align=1)
            lo = _int16(builder, args[5], signature.args[5])
            hi = _int16(builder, args[6], signature.args[6])
            scales = ir.Constant(I16x16, ir.Undefined)
            for i in range(16):
                scales = builder.insert_element(scales, lo if i < 8 else hi, ir.Constant(ir.IntType(32), i))
            madd = _madd_portable if portable or not _has_avx2(context) else _madd_x86
            sums = madd(builder, c, v, scales)
            builder.store(builder.add(builder.load(lanes_p, align=4), sums), lanes_p, align=4)
            return context.get_dummy_value()

        return types.none(lanes, codes, codes_at, x, x_at, scale_lo, scale_hi), codegen

    return madd_block


@intrinsic
def add_scaled(typingctx, acc, lanes, scale):
    """acc[k] += scale * lanes[k] for k < 8: float32 acc, int32 lanes, as one vector operation.

    Written as a loop, LLVM splits the stack arrays into scalars and converts one by one.
    """

    def codegen(context, builder, signature, args):
        acc_p = _vector_at(context, builder, signature.args[0], args[0], 0, F32x8)
        lanes_p = _vector_at(context, builder, signature.args[1], args[1], 0, I32x8)
        scale = _splat(builder, args[2], F32x8)
        products = builder.fmul(builder.sitofp(builder.load(lanes_p, align=4), F32x8), scale, flags=["fast"])
        builder.store(builder.fadd(builder.load(acc_p, align=4), products, flags=["fast"]), acc_p, align=4)
        return context.get_dummy_value()

    return types.none(acc, lanes, types.float32), codegen


@intrinsic
def or_bits(typingctx, codes, bits, value):
    """codes[i] |= value where bit i of the uint32 `bits` is set, for i < 32 (Q5 fifth bits).

    A bit-to-byte spread LLVM lowers to a few vector instructions; as a loop of variable
    shifts it stays scalar.
    """

    def codegen(context, builder, signature, args):
        codes_p = _vector_at(context, builder, signature.args[0], args[0], 0, I8x32)
        mask = builder.bitcast(builder.trunc(args[1], ir.IntType(32)), ir.VectorType(ir.IntType(1), 32))
        spread = builder.select(mask, _splat(builder, args[2], I8x32), ir.Constant(I8x32, [0] * 32))
        builder.store(builder.or_(builder.load(codes_p, align=1), spread), codes_p, align=1)
        return context.get_dummy_value()

    return types.none(codes, types.uint32, types.uint8), codegen


@intrinsic
def unpack_nibbles16(typingctx, codes, row, at):
    """codes[i] = low nibble of row[at + i], codes[16 + i] = its high nibble, for i < 16.

    One 16-byte load: as a loop next to other reads of the block, LLVM loaded byte by byte.
    """

    def codegen(context, builder, signature, args):
        i8x16 = ir.VectorType(ir.IntType(8), 16)
        packed = builder.load(_vector_at(context, builder, signature.args[1], args[1], args[2], i8x16), align=1)
        low = builder.and_(packed, ir.Constant(i8x16, [15] * 16))
        high = builder.lshr(packed, ir.Constant(i8x16, [4] * 16))
        both = builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(32))))
        codes_p = _vector_at(context, builder, signature.args[0], args[0], 0, I8x32)
        builder.store(both, codes_p, align=1)
        return context.get_dummy_value()

    return types.none(codes, row, types.int64), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (a free bitcast; vectorizes)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _store_scaled(signed: bool):
    @intrinsic
    def store_scaled(typingctx, out, out_at, codes, codes_at, d, m):
        """out[out_at + i] = d * codes[codes_at + i] + m for i < 32: a block dequantized.

        Written as a loop, LLVM cannot prove the float output apart from the byte input
        and leaves the 32 conversions scalar.
        """

        def codegen(context, builder, signature, args):
            f32x32 = ir.VectorType(ir.FloatType(), 32)
            c = builder.load(_vector_at(context, builder, signature.args[2], args[2], args[3], I8x32), align=1)
            values = (builder.sitofp if signed else builder.uitofp)(c, f32x32)
            values = builder.fmul(values, _splat(builder, args[4], f32x32), flags=["fast"])
            values = builder.fadd(values, _splat(builder, args[5], f32x32), flags=["fast"])
            builder.store(values, _vector_at(context, builder, signature.args[0], args[0], args[1], f32x32), align=4)
            return context.get_dummy_value()

        return types.none(out, types.int64, codes, types.int64, types.float32, types.float32), codegen

    return store_scaled


store_scaled_codes = _store_scaled(signed=False)  # unsigned codes from unpacking
store_scaled_int8 = _store_scaled(signed=True)  # Q8_0's bytes as they are


madd_block = _madd_block(portable=False)
madd_block_portable = _madd_block(portable=True)  # the non-AVX2 path, for tests on any machine
