"""Kernels compiled for the weight types a file holds, not for every type nanosmol knows.

The kernels take the weight type as their first argument and branch on it (`if qtype == Q4_K:`,
through inlined helpers down to one intrinsic per type). Called with a runtime integer, Numba
types, lowers and optimizes every branch: about a minute on a 2-core machine, most of a cold
start. Called with a constant, Numba compiles a separate version for that value
(`Literal[int]`), but still keeps every branch: its branch pruning folds comparisons of
constants, not of literal arguments. `ConstantTypes` is the compiler that closes that gap:
an integer-literal argument becomes a constant before pruning, so only the type's own code is
typed and compiled (inlined helpers included, as their arguments trace back to it).

Python cannot pass a literal, so `typed_kernels` holds the per-type entry points Python calls: a
small jitted closure over the type code that calls the kernel with it as a constant. Numba
caches closures by the values they close over, so each type's entry is compiled once and then
loaded from the cache like any other kernel.
"""

from __future__ import annotations

from numba.core import ir, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import build_definitions
from numba.core.untyped_passes import IRProcessing


@register_pass(mutates_CFG=True, analysis_only=False)
class LiteralArgumentsAsConstants(FunctionPass):
    """Replace each integer-literal argument by its value, before branches are pruned."""

    _name = "nanosmol_literal_arguments_as_constants"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        changed = False
        for block in state.func_ir.blocks.values():
            for stmt in block.body:
                if isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Arg):
                    arg_type = state.args[stmt.value.index]
                    if isinstance(arg_type, types.IntegerLiteral):
                        stmt.value = ir.Const(arg_type.literal_value, stmt.value.loc)
                        changed = True
        if changed:  # pruning looks values up in the definitions: they must show the constants
            state.func_ir._definitions = build_definitions(state.func_ir.blocks)
        return changed


class ConstantTypes(CompilerBase):
    """Numba's nopython pipeline with LiteralArgumentsAsConstants ahead of branch pruning."""

    def define_pipelines(self):
        pipeline = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pipeline.add_pass_after(LiteralArgumentsAsConstants, IRProcessing)
        pipeline.finalize()
        return [pipeline]


def named_for(codes: tuple[int, ...]):
    """A decorator, before njit: the function's name gets the type codes it is compiled for.

    Numba names a compiled function's symbols by its qualified name and a per-process counter,
    and the closures of typed_kernels share one name. Two of them compiled in different
    processes can carry the same counter; loaded from the cache into one process they then
    share one symbol, and one type's code runs for the other's (seen as "NRT_adapt_ndarray_
    to_python: descr is NULL"). A name per type keeps their symbols and cache files apart.
    """

    def rename(function):
        function.__qualname__ += "_" + "_".join(str(c).replace("-", "m") for c in codes)
        function.__name__ = function.__qualname__.rsplit(".", 1)[-1]
        return function

    return rename
