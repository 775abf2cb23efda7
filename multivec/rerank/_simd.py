"""Eight-lane float32 vectors for numba kernels, written as LLVM intrinsics.

Numba only vectorises innermost loops (its SLP vectoriser is off by default), and a fused
MaxSim kernel needs the opposite: a reduction over the token width on the *outside* with a
block of accumulators that stays in registers. Plain numba code puts that block in memory or
vectorises the wrong loop (measured: 14-25 GFLOP/s against about 100 for this form). So the
kernel spells the vectors out: :data:`f32x8` is a numba type whose value is an LLVM
``<8 x float>``, and the functions below are the handful of operations the kernel needs. LLVM
still chooses the instructions (AVX2 ``vfmadd231ps``/``vbroadcastss`` on x86-64, two NEON
registers per value on ARM), so nothing here is specific to one instruction set.

Everything here is an implementation detail of :mod:`multivec.rerank._numba`; importing this
module imports numba. Numba's on-disk cache only notices changes to the file that defines a
cached function: after editing this module, delete ``multivec/rerank/__pycache__/*.nb*`` (or
touch ``_numba.py``) so the kernels are recompiled.
"""

# mypy: ignore-errors
# llvmlite has no type information and numba's extension API is only partly typed; the code
# generators below are checked by compiling the kernels (tests/test_rerank.py), not by mypy.

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = [
    "LANES",
    "f32_pointer",
    "f32x8",
    "prefetch",
    "u16_pointer",
    "vfma",
    "vload",
    "vmax",
    "vsplat",
    "vstore",
    "vzero",
]

LANES = 8
"""Floats per vector: one AVX2 register."""

_VEC = ir.VectorType(ir.FloatType(), LANES)
_HALF_VEC = ir.VectorType(ir.HalfType(), LANES)
_I32 = ir.IntType(32)


class _F32x8Type(types.Type):
    """The numba type of an eight-lane float32 vector value."""

    def __init__(self) -> None:
        super().__init__(name="f32x8")


f32x8 = _F32x8Type()
"""The numba type of the vectors these intrinsics produce and consume."""


@register_model(_F32x8Type)
class _F32x8Model(models.PrimitiveModel):
    """Lowers :data:`f32x8` to a plain LLVM vector, so locals of this type live in registers."""

    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _VEC)


def _is_c_array(ty: Any, dtype: Any) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == dtype and ty.layout == "C"


def _element_pointer(context: Any, builder: Any, arrty: Any, arr: Any, index: Any) -> Any:
    """Pointer to element ``index`` of a C-contiguous array, counting over all its elements."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [index])


@intrinsic
def vzero(typingctx: Any) -> Any:
    """A vector of zeros."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(_VEC, [0.0] * LANES)

    return f32x8(), codegen


@intrinsic
def vsplat(typingctx: Any, x: Any) -> Any:
    """A vector with ``x`` in every lane: a float32, or a uint16 holding an IEEE half's bits.

    Numba has no float16 type on the CPU, so half-precision tokens are viewed as uint16 and
    widened here (``vcvtph2ps`` on x86-64 with F16C); a float32 load folds into the broadcast.
    """
    if x not in (types.float32, types.uint16):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        lanes_ty = _VEC if sig.args[0] == types.float32 else ir.VectorType(ir.IntType(16), LANES)
        one = builder.insert_element(ir.Constant(lanes_ty, ir.Undefined), args[0], _I32(0))
        mask = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
        splat = builder.shuffle_vector(one, ir.Constant(lanes_ty, ir.Undefined), mask)
        if sig.args[0] == types.float32:
            return splat
        # Broadcast the 16-bit pattern, then widen all lanes: a broadcast load plus one
        # conversion, rather than insert, convert and broadcast.
        return builder.fpext(builder.bitcast(splat, _HALF_VEC), _VEC)

    return f32x8(x), codegen


@intrinsic
def vload(typingctx: Any, arr: Any, index: Any) -> Any:
    """Lanes ``arr.flat[index:index + 8]`` of a C-contiguous float32 array (no bounds check)."""
    if not _is_c_array(arr, types.float32) or not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)

    return f32x8(arr, index), codegen


@intrinsic
def vfma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` lane by lane, fused where the CPU has FMA (``llvm.fmuladd``)."""
    if not (a == b == c == f32x8):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fmuladd.v8f32")
        return builder.call(fn, args)

    return f32x8(f32x8, f32x8, f32x8), codegen


@intrinsic
def vmax(typingctx: Any, a: Any, b: Any) -> Any:
    """The larger of ``a`` and ``b`` lane by lane.

    Written as compare-and-select, which x86 lowers to one ``vmaxps``; scores are finite, so
    the different NaN rules of the max instructions do not matter.
    """
    if not (a == b == f32x8):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        bigger = builder.fcmp_ordered(">", args[0], args[1])
        return builder.select(bigger, args[0], args[1])

    return f32x8(f32x8, f32x8), codegen


@intrinsic
def vstore(typingctx: Any, arr: Any, index: Any, v: Any) -> Any:
    """``arr.flat[index:index + 8] = v`` for a C-contiguous float32 array (no bounds check)."""
    if not _is_c_array(arr, types.float32) or not isinstance(index, types.Integer) or v != f32x8:
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, index, f32x8), codegen


def _pointer_intrinsic(dtype: Any) -> Any:
    """An intrinsic turning an integer address into a typed pointer, for ``numba.carray``."""

    @intrinsic
    def as_pointer(typingctx: Any, address: Any) -> Any:
        if not isinstance(address, types.Integer):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(dtype).as_pointer())

        return types.CPointer(dtype)(address), codegen

    return as_pointer


f32_pointer = _pointer_intrinsic(types.float32)
"""``f32_pointer(address)``: the float32 pointer at an integer address (a NumPy data pointer)."""

u16_pointer = _pointer_intrinsic(types.uint16)
"""``u16_pointer(address)``: the uint16 pointer at an integer address (float16 tokens)."""


@intrinsic
def prefetch(typingctx: Any, arr: Any, index: Any) -> Any:
    """Hint that ``arr.flat[index]`` will be read soon (``llvm.prefetch``, into L1).

    The kernel is otherwise stalled on memory latency (measured: 64 against 106 GFLOP/s on one
    core). A prefetch never faults, so ``index`` may point past the end of the array.
    """
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None
    if not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        # Integer arithmetic, not an inbounds GEP: the address may lie past the array.
        offset = builder.mul(
            context.cast(builder, args[1], sig.args[1], types.int64), i64(itemsize)
        )
        address = builder.add(builder.ptrtoint(data, i64), offset)
        ptr = builder.inttoptr(address, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # Arguments: read (0), highest temporal locality (3), data cache (1).
        builder.call(fn, [ptr, _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen
