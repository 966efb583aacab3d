"""Which instruction set the benchmarks compile nanosmol for.

Numba reads its target at import, from NUMBA_CPU_NAME and NUMBA_CPU_FEATURES. The name alone is
not enough: with NUMBA_CPU_NAME=haswell and no feature list Numba still hands LLVM the host's
features, so an AVX-512 host gets AVX-512 code. `--isa avx2` therefore sets both (haswell with
an empty feature list: LLVM's own haswell, AVX2 + FMA + F16C + BMI2 and nothing newer).
numpy's BLAS (prefill) follows: AVX2 runs set OPENBLAS_CORETYPE=Haswell, native runs lift
any OpenBLAS pin (see ../shared/ENGINEERING.md), as on a user's machine.
"""

from __future__ import annotations

import os
import sys

ISAS = ("avx2", "native")


def isa_environment(isa: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        env.pop(name, None)
    if isa == "avx2":
        env.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="", OPENBLAS_CORETYPE="Haswell")
    else:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    env["NANOSMOL_BENCH_ISA"] = isa
    return env


def reexec_for(isa: str) -> None:
    """Restart this script under `isa`'s environment, unless it already runs in it."""
    if os.environ.get("NANOSMOL_BENCH_ISA") != isa:
        os.execve(sys.executable, [sys.executable] + sys.argv, isa_environment(isa))


def describe_target() -> str:
    """What Numba compiles for here, and whether the host has AVX-512, in one line."""
    import numba.core.config as config
    from llvmlite import binding

    cpu = config.CPU_NAME or binding.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else binding.get_host_cpu_features().flatten()
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    compiled = "AVX-512" if "+avx512f" in features.split(",") else "AVX2" if cpu != "generic" else "baseline"
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{i['internal_api']} {i.get('architecture')}" for i in threadpool_info() if i["user_api"] == "blas")
    return (f"host {binding.get_host_cpu_name()} ({'with' if avx512 else 'no'} AVX-512), "
            f"nanosmol compiled for {cpu} ({compiled}), BLAS {blas}")
