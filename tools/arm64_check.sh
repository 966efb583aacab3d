#!/usr/bin/env bash
# nanosmol on emulated Raspberry-class boards: a Debian arm64 root under qemu-user, the project
# installed in it from aarch64 wheels, then for a Pi 4 (cortex-a72: NEON, no dot product) and a
# Pi 5 (cortex-a76: NEON with sdot/udot), each compiled for by Numba (NUMBA_CPU_NAME) and
# emulated by qemu (QEMU_CPU): the kernel property tests, the fixture fidelity tests, and
# `nanosmol run` on the default model, whose text must equal this host's or part from it only
# where this host's decode puts the two tokens within a near-tie (tools/near_tie.py).
#
#   sudo nice -n 10 tools/arm64_check.sh [--setup-only | BOARD...]   # BOARD: cortex-a72, cortex-a76 (default: both)
#
# Needs root (debootstrap, chroot, binfmt), network the first time, ../shared/fixtures beside
# the repository. The root and the wheels are built once into $NANOSMOL_ARM64 (default
# ~/.cache/nanosmol-arm64); later runs only copy the project in. Exit status 0: all passed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NANOSMOL_ARM64:-$HOME/.cache/nanosmol-arm64}
ROOT=$CACHE/root
FIXTURES=$REPO/../shared/fixtures
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROMPT="The capital of France is"
RUN_FLAGS=(-n 12 --temp 0 --seed 1 --raw -c 256)
# The kernel property tests (every vector form against the portable one and float64), and the
# model against llama.cpp's logits on the micro fixtures of the types the default model and the
# usual downloads hold (emulation runs tens of times slower: the whole suite would take hours).
TESTS=(tests/test_simd.py tests/test_vecdot.py tests/test_model.py
       -k "not test_model or ((llama_cpp or rescores) and (Q4_1 or Q8_0 or Q4_K_M))")
# What a fresh arm64 install pulls in, plus what the tests need.
PACKAGES=(numpy numba llvmlite gguf tokenizers click jinja2 threadpoolctl safetensors pytest hypothesis setuptools wheel)

say() { echo "== $*"; }

setup_host() {
    command -v debootstrap >/dev/null && command -v qemu-aarch64-static >/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap binfmt-support
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "error: no binfmt handler for aarch64" >&2; exit 2; }
}

build_root() {
    if [ ! -e "$ROOT/.built" ]; then
        say "debootstrap: Debian bookworm arm64 into $ROOT (a few minutes, once)"
        rm -rf "$ROOT"
        debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log"
        touch "$ROOT/.built"
    fi
    if [ "$(cat "$CACHE/wheels/.done" 2>/dev/null)" != "${PACKAGES[*]}" ]; then  # again when the list changes
        # pip in the chroot cannot verify this network's TLS: the host downloads for it.
        say "aarch64 wheels into $CACHE/wheels"
        python3 -m pip download -q --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
            --platform manylinux_2_17_aarch64 --python-version 3.11 --only-binary=:all: -d "$CACHE/wheels" "${PACKAGES[@]}"
        echo "${PACKAGES[*]}" >"$CACHE/wheels/.done"
    fi
    if [ "$(cat "$ROOT/opt/venv/.done" 2>/dev/null)" != "${PACKAGES[*]}" ]; then
        say "the dependencies into a venv in the root"
        mkdir -p "$ROOT/wheels" && cp "$CACHE"/wheels/*.whl "$ROOT/wheels/"
        in_root python3 -m venv /opt/venv
        in_root /opt/venv/bin/pip install -q --no-index --find-links /wheels "${PACKAGES[@]}"
        echo "${PACKAGES[*]}" >"$ROOT/opt/venv/.done"
    fi
}

in_root() {  # a command in the root with a clean environment (no host pip settings); each qemu reads QEMU_CPU
    chroot "$ROOT" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} ${NUMBA_CPU_NAME:+NUMBA_CPU_NAME=$NUMBA_CPU_NAME} "$@"
}

install_project() {
    say "installing nanosmol $(git -C "$REPO" describe --always --dirty) into the root"
    rm -rf "$ROOT/opt/nanosmol" "$ROOT/opt/shared"
    mkdir -p "$ROOT/opt/nanosmol" "$ROOT/opt/shared" "$ROOT/root/.cache/nanosmol"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 cp --parents -t "$ROOT/opt/nanosmol")
    cp -r "$FIXTURES" "$ROOT/opt/shared/fixtures"
    cp "$DEFAULT_MODEL" "$ROOT/root/.cache/nanosmol/"
    # As a user installs it: into site-packages, its Numba cache beside it, empty.
    in_root /opt/venv/bin/pip install -q --no-index --find-links /wheels --no-deps --force-reinstall /opt/nanosmol
    find "$ROOT"/opt/venv/lib/python3*/site-packages/nanosmol -name "*.nb[ic]" -delete  # pip leaves the last run's kernels
}

check_board() {  # $1: the CPU emulated and compiled for
    export QEMU_CPU=$1 NUMBA_CPU_NAME=$1
    local form
    form=$(in_root python -c "from numba.core.registry import cpu_target as t; from nanosmol.simd import target_aarch64
print(target_aarch64(t.target_context), t.target_context.codegen()._get_host_cpu_name())")
    say "$1: int8 dot products by form, CPU: $form"
    say "$1: nanosmol run ${RUN_FLAGS[*]} \"$PROMPT\" (cold compile, then warm)"
    local cold warm start
    start=$(date +%s)
    cold=$(in_root python -m nanosmol run "${RUN_FLAGS[@]}" "$PROMPT")
    say "$1: cold run $(( $(date +%s) - start )) s"
    start=$(date +%s)
    warm=$(in_root python -m nanosmol run "${RUN_FLAGS[@]}" "$PROMPT")
    say "$1: warm run $(( $(date +%s) - start )) s"
    echo "x86:  $X86_TEXT"
    echo "$1: $cold"
    [ "$warm" == "$cold" ] || { echo "FAIL: $1's warm run wrote other text than its cold run" >&2; exit 1; }
    if [ "$cold" != "$X86_TEXT" ]; then  # float sums run in another order: texts may part at a near-tie only
        (cd "$REPO" && env -u QEMU_CPU -u NUMBA_CPU_NAME PYTHONPATH="$REPO" python3 tools/near_tie.py "$PROMPT" "$X86_TEXT" "$cold") \
            || { echo "FAIL: $1's text differs from x86's" >&2; exit 1; }
    fi
    say "$1: tests (${TESTS[*]})"
    in_root /bin/sh -c 'cd /opt/nanosmol && exec python -m pytest -v -p no:cacheprovider "$@"' sh "${TESTS[@]}"
    unset QEMU_CPU NUMBA_CPU_NAME
}

main() {
    [ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap, chroot)" >&2; exit 2; }
    [ -d "$FIXTURES/micro" ] || { echo "error: no fixtures at $FIXTURES" >&2; exit 2; }
    mkdir -p "$CACHE"
    DEFAULT_MODEL=$(cd "$REPO" && python3 -c "from nanosmol.download import default_model_path; print(default_model_path())")
    setup_host
    build_root
    [ "${1:-}" = "--setup-only" ] && exit 0
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"  # Numba reads /proc/cpuinfo
    trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
    install_project
    X86_TEXT=$(cd "$REPO" && PYTHONPATH=$REPO python3 -m nanosmol run "${RUN_FLAGS[@]}" "$PROMPT")
    say "x86 ($(uname -m)) text: $X86_TEXT"
    local start=$(date +%s)
    local boards=("$@")
    [ ${#boards[@]} -gt 0 ] || boards=(cortex-a72 cortex-a76)
    for cpu in "${boards[@]}"; do
        check_board "$cpu"
    done
    say "arm64 check passed in $(( ($(date +%s) - start) / 60 )) min"
}

main "$@"
