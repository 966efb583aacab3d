"""nanosmol quantize against llama-quantize on one float GGUF: time, memory, bytes and logits.

For each TYPE both quantize SOURCE with the same threads, one after the other, each in its
own process (`nanosmol quantize`, and llama.cpp's llama_model_quantize from the venv):
wall seconds, MB of source per second, CPU seconds (the fair figure on a busy host) and
peak RSS. Then the two files are compared: identical bytes, or else the tensors whose type
or bytes differ, with each one's RMSE against the source (ours / llama.cpp's). --logits:
llama.cpp loads our file and its logits for a token sequence are compared with nanosmol's.

    python tools/compare_quantize.py SOURCE.gguf --llama VENV --types Q4_K_M,Q8_0 --logits
"""

from __future__ import annotations

import argparse
import filecmp
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanosmol.quants.mixes import find_mix

REPO = Path(__file__).resolve().parents[1]
LLAMA_QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.nthread, params.ftype = int(sys.argv[3]), int(sys.argv[4])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run a command to its end: (wall seconds, CPU seconds, peak RSS in MiB).

    The peak is the child's own VmHWM, polled: wait4's ru_maxrss would count the RSS this
    process had when it forked the child."""
    log = tempfile.TemporaryFile()  # not a pipe: llama.cpp's log of a model fills one and blocks
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    peak_kib = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kib = max(peak_kib, vm_hwm_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if status:
        log.seek(0)
        sys.exit(f"{command[:4]} failed: {log.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def compare_files(source: Path, ours: Path, theirs: Path) -> str:
    """'identical', or the tensors that differ with their RMSE ratio against the source."""
    from gguf.quants import dequantize

    from nanosmol.convert.quantize_gguf import float_rows
    from nanosmol.gguf_file import GGUFFile

    if filecmp.cmp(ours, theirs, shallow=False):
        return "identical files"
    a, b, src = GGUFFile(ours), GGUFFile(theirs), GGUFFile(source)
    lines = []
    for name, t in b.tensors.items():
        mine = a.tensors.get(name)
        if mine is None or mine.type != t.type:
            lines.append(f"  {name}: type {mine and mine.type.name} here, {t.type.name} in llama.cpp's")
        elif not np.array_equal(a.tensor_data(name), b.tensor_data(name)):
            info = src.tensors[name]
            x = float_rows(src.tensor_data(name).reshape(info.rows, -1), info.type, info.cols, 0, info.rows).reshape(-1)
            rmse = [np.sqrt(np.mean((dequantize(f.tensor_data(name), t.type).reshape(-1) - x) ** 2)) for f in (a, b)]
            same = np.mean(a.tensor_data(name) == b.tensor_data(name))
            lines.append(f"  {name} ({t.type.name}): {same:.4%} bytes equal, RMSE ratio {rmse[0] / rmse[1]:.4f}")
    return "tensors differ:\n" + "\n".join(lines) if lines else "same tensors, other metadata or order"


TEXT = ("The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, "
        "about 30 times the diameter of Earth, and always shows the same side to us.")


def compare_logits(path: Path, texts: tuple[str, ...] = (TEXT,), n_tokens: int = 48) -> str:
    """llama.cpp's logits on our file against nanosmol's, for the tokens of each text (both
    engines' own defaults: an f16 KV cache, 2 threads).

    Not random tokens: on those a real model's activations run wild, and the two engines'
    int8 roundings of them drift three times as far apart (from each other and from a
    float64 reference) as on text."""
    from llama_cpp import Llama

    import nanosmol

    model = nanosmol.load(path, n_ctx=256, n_threads=2)
    llm = Llama(str(path), n_ctx=256, n_batch=256, logits_all=True, n_threads=2, verbose=False)
    figures = []
    for text in texts:
        tokens = model.tokenize(text, special=True)[:n_tokens]
        ours = model.logits(tokens)
        llm.reset()
        llm.eval(tokens)
        theirs = np.array(llm.scores[: len(tokens)], np.float32)
        error = np.abs(ours - theirs).max() / np.abs(theirs).max()
        same_tokens = "" if tokens == llm.tokenize(text.encode(), add_bos=model.tokenizer.add_bos, special=True)[
            :n_tokens] else " (llama.cpp tokenizes the text otherwise)"
        figures.append(f"{len(tokens)} tokens: max diff {error:.2%} of max|logit|, argmax agrees "
                       f"{np.mean(ours.argmax(1) == theirs.argmax(1)):.0%}{same_tokens}")
    return "llama.cpp loads it; its logits vs nanosmol's on " + "; ".join(figures)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--llama", type=Path, required=True, help="venv of llama-cpp-python")
    parser.add_argument("--types", default="Q4_K_M,Q5_K_M,Q3_K_M,Q2_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logits", action="store_true", help="load our files in llama.cpp and compare logits")
    parser.add_argument("--out", type=Path, help="folder for the quantized files (default: a temporary one)")
    args = parser.parse_args()
    site = glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))[0]
    sys.path.append(site)  # after ours: llama_cpp for --logits
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), site]))
    out = args.out or Path(tempfile.mkdtemp(prefix="compare-quantize-"))
    size_mb = args.source.stat().st_size / 1e6
    print(f"{args.source.name} ({size_mb:.0f} MB), {args.threads} threads, host load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| type | nanosmol s (MB/s) | llama.cpp s (MB/s) | time ratio | CPU s ratio | peak RSS MiB | result |")
    print("|---|---|---|---|---|---|---|")
    for qtype in args.types.split(","):
        ours, theirs = out / f"nanosmol-{qtype}.gguf", out / f"llama-{qtype}.gguf"
        a = run_measured([sys.executable, "-m", "nanosmol", "quantize", str(args.source), str(ours), qtype,
                          "-t", str(args.threads)], env)
        b = run_measured([str(args.llama / "bin" / "python"), "-c", LLAMA_QUANTIZE, str(args.source), str(theirs),
                          str(args.threads), str(int(find_mix(qtype).file_type))], env)
        result = compare_files(args.source, ours, theirs)
        print(f"| {qtype} | {a[0]:.1f} ({size_mb / a[0]:.0f}) | {b[0]:.1f} ({size_mb / b[0]:.0f}) | {a[0] / b[0]:.2f}x "
              f"| {a[1]:.0f} / {b[1]:.0f} = {a[1] / b[1]:.2f}x | {a[2]:.0f} / {b[2]:.0f} | {result.splitlines()[0]} |",
              flush=True)
        if "\n" in result:
            print(result)
        if args.logits:
            print(f"  {qtype}: {compare_logits(ours)}", flush=True)
        if args.out is None:
            ours.unlink()
            theirs.unlink()
    print(f"\nhost load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
