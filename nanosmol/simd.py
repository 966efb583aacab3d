"""What Numba cannot say by itself: arrays on the stack, and vector int8 arithmetic.

These are `@intrinsic`s that emit LLVM IR directly. Stack arrays matter because LLVM must
assume a heap array may alias the weights, so it stores and reloads it on every block; an
`alloca` it keeps in registers. The int8 helpers matter because Numba types integer
arithmetic as int64, so a plain int8 dot-product loop never becomes vpmaddubsw/vpmaddwd,
and byte loops next to other reads of a block came out scalar. Each helper works on one
32-value block at the start of (or at an offset into) its arrays.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

import nanosmol.jit_cache  # noqa: F401  (every kernel module imports this one: their cache saves are locked)

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
_float32x128 = _stack_pointer(types.float32, 128)
_uint8x128 = _stack_pointer(types.uint8, 128)


@njit(**INLINE)
def stack_lanes():
    """32 float32 accumulator lanes on the stack of the calling kernel (kept in registers)."""
    return numba.carray(_float32x32(), 32)


@njit(**INLINE)
def stack_token_lanes():
    """128 float32 accumulator lanes: 16 for each of 8 tokens (prefill's integer products)."""
    return numba.carray(_float32x128(), 128)


@njit(**INLINE)
def stack_codes():
    """128 bytes for a block's unpacked integer codes."""
    return numba.carray(_uint8x128(), 128)


# CPUs whose LLVM defaults include AVX2, for NUMBA_CPU_FEATURES="" with a named CPU.
AVX2_CPUS = {"haswell", "broadwell", "skylake", "skylake-avx512", "cascadelake", "icelake-client", "icelake-server",
             "tigerlake", "alderlake", "raptorlake", "sapphirerapids", "znver1", "znver2", "znver3", "znver4", "znver5"}


def target_has_avx2(context) -> bool:
    """Whether the code Numba compiles runs on AVX2: the features it hands LLVM, not the host's.

    Numba passes the host's features, or NUMBA_CPU_FEATURES when set; NUMBA_CPU_NAME alone
    changes only the CPU name (so `haswell` on an AVX-512 host still gets AVX-512 features).
    """
    codegen = context.codegen()
    features = codegen._tm_features
    if features:
        return "+avx2" in features.split(",")
    return codegen._get_host_cpu_name() in AVX2_CPUS


ON_AARCH64 = platform.machine() in ("aarch64", "arm64")  # where fcvt converts float16 both ways


def target_converts_halves(context) -> bool:
    """Whether the target converts between float32 and float16 itself: x86 with AVX2 has
    F16C (vcvtph2ps, vcvtps2ph), aarch64 fcvt. Elsewhere LLVM would call a runtime helper
    the JIT may not have."""
    return target_has_avx2(context) or ON_AARCH64


@intrinsic
def converts_halves(typingctx):
    """target_converts_halves as a constant of the compiled code (its other branch is dropped)."""

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(target_converts_halves(context)))

    return types.boolean(), codegen


@intrinsic
def store_halves32(typingctx, out, o, x, at):
    """The bytes out[o : o + 64] = x[at : at + 32] as float16, rounded to the nearest (ties to
    even, as numpy's astype): one vector conversion, only where converts_halves()."""

    def codegen(context, builder, signature, args):
        f32x32, i16x32 = ir.VectorType(ir.FloatType(), 32), ir.VectorType(ir.IntType(16), 32)
        values = builder.load(vector_at(context, builder, signature.args[2], args[2], args[3], f32x32), align=4)
        bits = builder.bitcast(builder.fptrunc(values, ir.VectorType(ir.HalfType(), 32)), i16x32)
        builder.store(bits, vector_at(context, builder, signature.args[0], args[0], args[1], i16x32), align=1)
        return context.get_dummy_value()

    return types.none(out, types.int64, x, types.int64), codegen


# CPUs whose LLVM defaults include 256-bit VNNI (AVX-512 VNNI with VL, or AVX-VNNI).
VNNI_CPUS = {"cascadelake", "icelake-client", "icelake-server", "tigerlake", "alderlake", "raptorlake", "sapphirerapids",
             "znver4", "znver5"}


def target_has_vnni(context) -> bool:
    """Whether the target has vpdpbusd/vpdpwssd on 256-bit vectors (AVX-512 VNNI + VL, or AVX-VNNI),
    decided as target_has_avx2 decides AVX2."""
    codegen = context.codegen()
    features = codegen._tm_features
    if features:
        features = set(features.split(","))
        return {"+avx512vnni", "+avx512vl"} <= features or "+avxvnni" in features
    return codegen._get_host_cpu_name() in VNNI_CPUS


def vector_at(context, builder, array_type, array, index, vector_type):
    """A pointer to the `vector_type` starting at array[index] (index: an LLVM i64, or 0)."""
    data = context.make_array(array_type)(context, builder, array).data
    if isinstance(index, int):
        index = ir.Constant(ir.IntType(64), index)
    return builder.bitcast(builder.gep(data, [index]), vector_type.as_pointer())


def call_llvm(builder, name: str, result_type, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(result_type, [a.type for a in args]), name)
    return builder.call(fn, args)


def splat(builder, value, vector_type):
    """A vector with every element `value`."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count))


def even_odd(builder, vector, n: int):
    """The even and the odd elements of a vector of 2n, as two vectors of n."""
    index = lambda first: ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(first, 2 * n, 2)))
    return builder.shuffle_vector(vector, vector, index(0)), builder.shuffle_vector(vector, vector, index(1))


I8x32, I16x16, I16x32, I32x8, I32x16 = (ir.VectorType(ir.IntType(b), n) for b, n in
                                        ((8, 32), (16, 16), (16, 32), (32, 8), (32, 16)))


def madd_x86(builder, codes, x, scales):
    """vpmaddubsw then vpmaddwd: llama.cpp's AVX2 inner step."""
    pairs = call_llvm(builder, "llvm.x86.avx2.pmadd.ub.sw", I16x16, [codes, x])
    return call_llvm(builder, "llvm.x86.avx2.pmadd.wd", I32x8, [pairs, scales])


def dot_bytes_vnni(builder, acc, codes, x):
    """acc + the sums of 4 adjacent codes * x products (uint8 codes, int8 x): one vpdpbusd,
    which saturates nothing (vpmaddubsw's int16 pairs can)."""
    return call_llvm(builder, "llvm.x86.avx512.vpdpbusd.256", I32x8,
                     [acc, builder.bitcast(codes, I32x8), builder.bitcast(x, I32x8)])


def dot_pairs_vnni(builder, acc, pairs, scales):
    """acc + vpmaddwd(pairs, scales) in one vpdpwssd."""
    return call_llvm(builder, "llvm.x86.avx512.vpdpwssd.256", I32x8,
                     [acc, builder.bitcast(pairs, I32x8), builder.bitcast(scales, I32x8)])


# aarch64 CPUs whose LLVM defaults include the dot-product instructions (sdot/udot, ARMv8.2
# dotprod), for a named CPU whose feature list does not say (under qemu-user LLVM reads only
# a few features, e.g. "-aes,-rand,-sha2,-sve" for a cortex-a76).
DOTPROD_CPUS = {"cortex-a55", "cortex-a65", "cortex-a75", "cortex-a76", "cortex-a76ae", "cortex-a77", "cortex-a78",
                "cortex-a78c", "cortex-a510", "cortex-a710", "cortex-a715", "cortex-a720", "cortex-x1", "cortex-x2",
                "cortex-x3", "cortex-x4", "neoverse-n1", "neoverse-n2", "neoverse-v1", "neoverse-v2", "neoverse-512tvb",
                "ampere1", "ampere1a", "apple-a13", "apple-a14", "apple-a15", "apple-a16", "apple-m1", "apple-m2",
                "apple-m3", "a64fx", "carmel", "tsv110", "thunderx3t110", "saphira", "oryon-1"}


def target_aarch64(context) -> str | None:
    """None unless Numba compiles for aarch64; then "dotprod" where the target has sdot/udot,
    else "neon" (every aarch64 CPU has NEON). The target's features, not the host's, as above."""
    codegen = context.codegen()
    if not codegen._tm.triple.startswith(("aarch64", "arm64")):
        return None
    features = codegen._tm_features.split(",") if codegen._tm_features else []
    if "+dotprod" in features or "-dotprod" in features:  # a feature list changes the CPU's defaults
        return "dotprod" if "+dotprod" in features else "neon"
    return "dotprod" if codegen._get_host_cpu_name() in DOTPROD_CPUS else "neon"


def _halves16(builder, vector):
    """The two <16 x i8> halves of a <32 x i8>."""
    half = lambda first: ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(first, first + 16)))
    return builder.shuffle_vector(vector, vector, half(0)), builder.shuffle_vector(vector, vector, half(16))


def _concat(builder, a, c):
    """Two vectors of n as one of 2n."""
    n = a.type.count
    return builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(ir.IntType(32), 2 * n), list(range(2 * n))))


def dot4_sdot(builder, a, c):
    """int32x8: lane k the sum of a[i] * c[i] for i in 4k..4k+3, a and c signed int8x32: one
    sdot per 16 bytes (ARMv8.2 dotprod)."""
    i32x4 = ir.VectorType(ir.IntType(32), 4)
    zero = ir.Constant(i32x4, [0] * 4)
    sums = [call_llvm(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", i32x4, [zero, a16, c16])
            for a16, c16 in zip(_halves16(builder, a), _halves16(builder, c))]
    return _concat(builder, *sums)


def dot4_neon(builder, a, c):
    """dot4_sdot's sums on plain NEON: smull (int8 x int8 -> int16), saddlp (adjacent int16
    pairs -> int32) and addp (adjacent int32 pairs), as llama.cpp does without dotprod."""
    i16x8, i32x4 = ir.VectorType(ir.IntType(16), 8), ir.VectorType(ir.IntType(32), 4)
    eighth = lambda v, first: builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                                       list(range(first, first + 8))))
    pairs = [call_llvm(builder, "llvm.aarch64.neon.saddlp.v4i32.v8i16", i32x4,
                       [call_llvm(builder, "llvm.aarch64.neon.smull.v8i16", i16x8, [eighth(a, f), eighth(c, f)])])
             for f in range(0, 32, 8)]
    quads = [call_llvm(builder, "llvm.aarch64.neon.addp.v4i32", i32x4, pairs[i : i + 2]) for i in (0, 2)]
    return _concat(builder, *quads)


def madd_aarch64(dot4):
    """madd_x86's sums from an aarch64 dot4: the codes (at most 63) taken as signed bytes, each
    4-byte group's sum times its scale. Every caller gives the two int16 scales of a 4-byte
    group the same value (one scale per 16 or 32 values), which this form relies on."""

    def madd(builder, codes, x, scales):
        group_scales = builder.sext(even_odd(builder, scales, 8)[0], I32x8)
        return builder.mul(dot4(builder, codes, x), group_scales)

    return madd


madd_sdot, madd_neon = madd_aarch64(dot4_sdot), madd_aarch64(dot4_neon)


def madd_portable(builder, codes, x, scales):
    """The same sums in plain vector IR, for every other target (LLVM picks the instructions)."""
    products = builder.mul(builder.zext(codes, I16x32), builder.sext(x, I16x32))
    pairs = builder.add(*even_odd(builder, products, 16))
    scaled = builder.mul(builder.sext(pairs, I32x16), builder.sext(scales, I32x16))
    return builder.add(*even_odd(builder, scaled, 8))


@intrinsic
def or_bits(typingctx, codes, bits, value):
    """codes[i] |= value where bit i of the uint32 `bits` is set, for i < 32 (Q5 fifth bits).

    A bit-to-byte spread LLVM lowers to a few vector instructions; as a loop of variable
    shifts it stays scalar.
    """

    def codegen(context, builder, signature, args):
        codes_p = vector_at(context, builder, signature.args[0], args[0], 0, I8x32)
        mask = builder.bitcast(builder.trunc(args[1], ir.IntType(32)), ir.VectorType(ir.IntType(1), 32))
        spread = builder.select(mask, splat(builder, args[2], I8x32), ir.Constant(I8x32, [0] * 32))
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
        packed = builder.load(vector_at(context, builder, signature.args[1], args[1], args[2], i8x16), align=1)
        low = builder.and_(packed, ir.Constant(i8x16, [15] * 16))
        high = builder.lshr(packed, ir.Constant(i8x16, [4] * 16))
        both = builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(32))))
        codes_p = vector_at(context, builder, signature.args[0], args[0], 0, I8x32)
        builder.store(both, codes_p, align=1)
        return context.get_dummy_value()

    return types.none(codes, row, types.int64), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (a free bitcast; vectorizes)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def max_into16(typingctx, lanes, row, at):
    """lanes[i] = max(lanes[i], row[at + i]) for i < 16, as one vector max: Numba's max() of
    two floats stays a scalar compare and branch even in a loop with fastmath."""

    def codegen(context, builder, signature, args):
        f32x16 = ir.VectorType(ir.FloatType(), 16)
        lanes_p = vector_at(context, builder, signature.args[0], args[0], 0, f32x16)
        current = builder.load(lanes_p, align=4)
        values = builder.load(vector_at(context, builder, signature.args[1], args[1], args[2], f32x16), align=4)
        larger = builder.fcmp_ordered(">", values, current, flags=["fast"])
        builder.store(builder.select(larger, values, current), lanes_p, align=4)
        return context.get_dummy_value()

    return types.none(lanes, row, types.int64), codegen


@intrinsic
def prefetch(typingctx, array, at):
    """Ask for the cache line holding element `at` of the array (flat index, any shape), to be
    read soon. A hint: no bounds check, and it never faults."""

    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        address = vector_at(context, builder, signature.args[0], args[0], args[1], i8)
        read, keep, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        call_llvm(builder, "llvm.prefetch.p0i8", ir.VoidType(), [address, read, keep, data])
        return context.get_dummy_value()

    return types.none(array, types.int64), codegen


@intrinsic
def abs_max32(typingctx, x, at):
    """max |x[at + i]| for i < 32, in vector registers (a loop of abs and max stays scalar:
    see max_into16)."""

    def codegen(context, builder, signature, args):
        f32x32, i32x32 = ir.VectorType(ir.FloatType(), 32), ir.VectorType(ir.IntType(32), 32)
        values = builder.load(vector_at(context, builder, signature.args[0], args[0], args[1], f32x32), align=4)
        magnitude = builder.and_(builder.bitcast(values, i32x32), ir.Constant(i32x32, [0x7FFFFFFF] * 32))
        v = builder.bitcast(magnitude, f32x32)
        width = 16
        while width:  # fold the upper half onto the lower
            pick = lambda first: ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(first, first + width)))
            low, high = builder.shuffle_vector(v, v, pick(0)), builder.shuffle_vector(v, v, pick(width))
            v = builder.select(builder.fcmp_ordered(">", low, high, flags=["fast"]), low, high)
            width //= 2
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return types.float32(x, types.int64), codegen


@intrinsic
def round_into32(typingctx, x, at, scale, q):
    """q[at + i] = rint(x[at + i] * scale) as int8 for i < 32 (in range by the caller's
    scale), and their sum: a block quantized in vector registers (as a loop, with the block
    maximum, 1 ns a value)."""

    def codegen(context, builder, signature, args):
        f32x32, i32x32 = ir.VectorType(ir.FloatType(), 32), ir.VectorType(ir.IntType(32), 32)
        values = builder.load(vector_at(context, builder, signature.args[0], args[0], args[1], f32x32), align=4)
        scaled = builder.fmul(values, splat(builder, args[2], f32x32), flags=["fast"])
        codes = builder.fptosi(call_llvm(builder, "llvm.rint.v32f32", f32x32, [scaled]), i32x32)
        q_at = vector_at(context, builder, signature.args[3], args[3], args[1], I8x32)
        builder.store(builder.trunc(codes, I8x32), q_at, align=1)
        return call_llvm(builder, "llvm.vector.reduce.add.v32i32", ir.IntType(32), [codes])

    return types.int32(x, types.int64, types.float32, q), codegen


def _store_scaled(signed: bool):
    @intrinsic
    def store_scaled(typingctx, out, out_at, codes, codes_at, d, m):
        """out[out_at + i] = d * codes[codes_at + i] + m for i < 32: a block dequantized.

        Written as a loop, LLVM cannot prove the float output apart from the byte input
        and leaves the 32 conversions scalar.
        """

        def codegen(context, builder, signature, args):
            f32x32 = ir.VectorType(ir.FloatType(), 32)
            c = builder.load(vector_at(context, builder, signature.args[2], args[2], args[3], I8x32), align=1)
            values = (builder.sitofp if signed else builder.uitofp)(c, f32x32)
            values = builder.fmul(values, splat(builder, args[4], f32x32), flags=["fast"])
            values = builder.fadd(values, splat(builder, args[5], f32x32), flags=["fast"])
            builder.store(values, vector_at(context, builder, signature.args[0], args[0], args[1], f32x32), align=4)
            return context.get_dummy_value()

        return types.none(out, types.int64, codes, types.int64, types.float32, types.float32), codegen

    return store_scaled


store_scaled_codes = _store_scaled(signed=False)  # unsigned codes from unpacking
store_scaled_int8 = _store_scaled(signed=True)  # Q8_0's bytes as they are
