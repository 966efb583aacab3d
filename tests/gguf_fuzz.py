"""Mutated GGUF files, and the property every entry point must keep on them.

Shared by tests/test_fuzz.py (a short run in CI) and tools/fuzz_gguf.py (the long run).
A case number fixes the seed file and every mutation, so any failure replays exactly:
`python tools/fuzz_gguf.py --case N`.

Mutations are of two kinds: blind ones on the bytes of the header, metadata and tensor
infos (bit flips, 32/64-bit fields set to extremes, truncation), and structural ones that
re-encode the file with one metadata value or tensor info changed, so that the tokenizer,
the config, the chat template and the kernels see well-formed but wrong content.

The property (`drive`): the parser, the inspector, `inspect-gguf` and `run` either succeed
or end in one line naming the problem, exit 2; no traceback; the inspector calls a file
OK exactly when `run` runs it, except for weights whose products overflow float32 in the
forward pass (outcome "overflows": finite but absurd values, e.g. F32 bytes read as BF16).
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np
from click.testing import CliRunner
from gguf import GGUFValueType as V

from conftest import MICRO, SMOLLM3_TEMPLATE

SEED_FILES = ["micro-llama-Q8_0.gguf", "micro-llama-Q4_K_M.gguf", "micro-llama-Q5_1.gguf",
              "micro-smollm3-Q4_0.gguf", "micro-smollm3-Q2_K.gguf", "micro-smollm3-Q6_K.gguf"]

_FORMATS = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
            V.FLOAT32: "<f", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d", V.BOOL: "<B"}
_INT_RANGES = {V.UINT8: (0, 2**8 - 1), V.INT8: (-(2**7), 2**7 - 1), V.UINT16: (0, 2**16 - 1),
               V.INT16: (-(2**15), 2**15 - 1), V.UINT32: (0, 2**32 - 1), V.INT32: (-(2**31), 2**31 - 1),
               V.UINT64: (0, 2**64 - 1), V.INT64: (-(2**63), 2**63 - 1), V.BOOL: (0, 1)}

# fp16 fields holding each quantized block's scales (byte offsets in the block), as ggml lays them out.
SCALE_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q2_K": (80, 82),
                "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}

HOSTILE_TEMPLATES = [
    "{{ raise_exception('this template refuses') }}",
    "{% for m in messages %}{{ m['content'] }",
    "{{ 1 / 0 }}",
    "{{ messages[7]['content'] }}",
    "{{ messages.__class__.__mro__ }}",
    "{{ nothing() }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ 'xxxxxxxx' * 100000 }}{% endfor %}",
    "{{ 'x' * 10000000000 }}",
    "{{ 10 ** 10 ** 10 }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ 'a'.ljust(9999999999) }}",
    "{{ 'a'|center(9999999999) }}",
    "{{ '{:>9999999999}'.format(1) }}",
    "{{ range(10 ** 12)|list }}",
    "{% set s = namespace(t='ab') %}{% for i in range(64) %}{% set s.t = s.t + s.t %}{% endfor %}{{ s.t }}",
    "{% for m in messages %}{{ m['content'] * 1000000 }}{% endfor %}",
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
]

HOSTILE_STRINGS = ["", " ", "x", "Ġa", "Ġa b", "a b c", "Ġ Ġ", "Ġ", "\x00", "é", "\ud7ff", "<|im_end|>",
                   "{{", "{%", "gpt2", "llama", "smollm3", "llama-bpe", "smollm", "spm", "bert"]
HOSTILE_INTS = [0, 1, 2, 3, 7, 255, 256, 266, 267, 268, 2**15, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63 - 1,
                2**64 - 1, -1, -(2**31), -(2**63)]
HOSTILE_FLOATS = [0.0, -0.0, 1e-45, 1e-30, 1.0, -1.0, 1e30, 3.4e38, math.inf, -math.inf, math.nan]
EXTRA_KEYS = ["tokenizer.chat_template", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.add_bos_token",
              "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.tokens", "{arch}.vocab_size",
              "{arch}.no_rope_layers", "{arch}.no_rope_layer_interval", "{arch}.attention.key_length",
              "{arch}.attention.head_count_kv", "{arch}.rope.freq_base", "general.alignment",
              "{arch}.attention.layer_norm_rms_epsilon", "general.architecture"]


# -- reading and writing GGUF ----------------------------------------------------------------


@dataclass
class Parts:
    """A GGUF file as editable parts: metadata (key, type, subtype, value), tensor infos, data."""

    kvs: list  # [key, vtype, subtype or None, value]
    infos: list  # [name, shape list, type id, relative offset]
    data: bytes
    alignment: int
    arch: str


@lru_cache(maxsize=None)
def _seed_parts(name: str) -> tuple:
    reader = gguf.GGUFReader(MICRO / name)
    kvs = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == V.ARRAY else None
        kvs.append((key, vtype, sub, field.contents()))
    infos = [(t.name, [int(d) for d in t.shape], int(t.tensor_type), int(t.data_offset - reader.data_offset))
             for t in reader.tensors]
    data = (MICRO / name).read_bytes()[reader.data_offset:]
    alignment = int(reader.fields["general.alignment"].contents()) if "general.alignment" in reader.fields else 32
    return tuple(kvs), tuple(infos), data, alignment, reader.fields["general.architecture"].contents()


def seed(name: str, template: str | None = None) -> Parts:
    kvs, infos, data, alignment, arch = _seed_parts(name)
    # Copies down to the arrays and shapes, which mutations edit in place: the cached seed stays intact.
    kvs = [[k, t, sub, list(v) if isinstance(v, list) else v] for k, t, sub, v in kvs]
    infos = [[name, list(shape), qtype, offset] for name, shape, qtype, offset in infos]
    parts = Parts(kvs, infos, data, alignment, arch)
    if template is not None:
        parts.kvs.append(["tokenizer.chat_template", V.STRING, None, template])
    return parts


def _scalar(vtype, value) -> bytes:
    if vtype == V.STRING:
        raw = value.encode("utf-8", "surrogatepass")
        return struct.pack("<Q", len(raw)) + raw
    if vtype in _INT_RANGES:
        lo, hi = _INT_RANGES[vtype]
        value = min(max(int(value), lo), hi)
    return struct.pack(_FORMATS[vtype], value)


def _value(vtype, sub, value) -> bytes:
    if vtype != V.ARRAY:
        return _scalar(vtype, value)
    return struct.pack("<IQ", sub, len(value)) + b"".join(_scalar(sub, v) for v in value)


def encode(p: Parts) -> bytes:
    out = [b"GGUF", struct.pack("<IQQ", 3, len(p.infos), len(p.kvs))]
    for key, vtype, sub, value in p.kvs:
        out += [_scalar(V.STRING, key), struct.pack("<I", vtype), _value(vtype, sub, value)]
    for name, shape, qtype, offset in p.infos:
        out += [_scalar(V.STRING, name), struct.pack("<I", len(shape)),
                b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in shape), struct.pack("<IQ", qtype, offset)]
    head = b"".join(out)
    return head + b"\0" * (-len(head) % p.alignment) + p.data


# -- mutations ---------------------------------------------------------------------------------


def _hostile_value(rng: random.Random, vtype, sub):
    kind = sub if vtype == V.ARRAY else vtype
    if kind == V.STRING:
        return rng.choice(HOSTILE_STRINGS + HOSTILE_TEMPLATES)
    if kind in (V.FLOAT32, V.FLOAT64):
        return rng.choice(HOSTILE_FLOATS)
    return rng.choice(HOSTILE_INTS)


def _retype(rng: random.Random, kv) -> None:
    """The same key with a value of another type (a string where a number belongs, an array, ...)."""
    vtype = rng.choice([V.UINT32, V.INT32, V.UINT64, V.FLOAT32, V.BOOL, V.STRING, V.ARRAY])
    sub = rng.choice([V.STRING, V.INT32, V.UINT8, V.FLOAT32]) if vtype == V.ARRAY else None
    if vtype == V.ARRAY:
        value = [_hostile_value(rng, vtype, sub) for _ in range(rng.choice([0, 1, 2, 8]))]
    else:
        value = _hostile_value(rng, vtype, None)
    kv[1:] = [vtype, sub, value]


def _edit_array(rng: random.Random, kv) -> None:
    values = list(kv[3])
    op = rng.randrange(6)
    if op == 0 or not values:
        values.append(_hostile_value(rng, kv[1], kv[2]))
    elif op == 1:
        values[rng.randrange(len(values))] = _hostile_value(rng, kv[1], kv[2])
    elif op == 2:
        del values[rng.randrange(len(values))]
    elif op == 3:
        values = values[: rng.randrange(len(values) + 1)]
    elif op == 4:
        i = rng.randrange(len(values))
        values.insert(rng.randrange(len(values) + 1), values[i])  # a duplicate
    else:
        rng.shuffle(values)
    kv[3] = values


def mutate_metadata(rng: random.Random, p: Parts) -> str:
    op = rng.randrange(5)
    if op == 0:  # a new or replaced key with a hostile value
        key = rng.choice(EXTRA_KEYS).format(arch=p.arch)
        p.kvs = [kv for kv in p.kvs if kv[0] != key]
        kv = [key, V.STRING, None, ""]
        _retype(rng, kv) if rng.random() < 0.4 else kv.__setitem__(3, rng.choice(HOSTILE_TEMPLATES + HOSTILE_STRINGS))
        p.kvs.append(kv)
        return f"set {key}"
    kv = rng.choice(p.kvs)
    if op == 1:
        p.kvs.remove(kv)
        return f"drop {kv[0]}"
    if op == 2:
        _retype(rng, kv)
        return f"retype {kv[0]}"
    if kv[1] == V.ARRAY:
        _edit_array(rng, kv)
        return f"edit array {kv[0]}"
    kv[3] = _hostile_value(rng, kv[1], kv[2])
    return f"value {kv[0]}"


def mutate_tensor_info(rng: random.Random, p: Parts) -> str:
    info = rng.choice(p.infos)
    op = rng.randrange(4)
    if op == 0:
        info[2] = rng.choice([0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 20, 30, 39, 255])
    elif op == 1:
        info[1][rng.randrange(len(info[1]))] = rng.choice([0, 1, 32, 64, 128, 256, 267, 512, 2**32, 2**63])
    elif op == 2:
        other = rng.choice(p.infos)
        info[0], other[0] = other[0], info[0]
    else:
        info[1] = info[1][::-1] if rng.random() < 0.5 else info[1] + [1]
    return f"tensor info {info[0]}"


def mutate_scales(rng: random.Random, p: Parts) -> str:
    """A NaN or Inf written into one block scale (or float value) of one tensor."""
    name, shape, qtype, offset = rng.choice(p.infos)
    type_name = gguf.GGMLQuantizationType(qtype).name
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
    n_blocks = math.prod(shape) // block
    pos = offset + rng.randrange(max(n_blocks, 1)) * size
    if pos + size > len(p.data):  # an earlier edit moved this tensor off the data
        return f"no scale edit in {name}"
    bits = rng.choice(["nan", "inf", "-inf"])
    if type_name == "F32":
        patch = struct.pack("<f", float(bits))
    elif type_name == "BF16":
        patch = struct.pack("<f", float(bits))[2:]
    else:
        pos += rng.choice(SCALE_FIELDS.get(type_name, (0,)))
        patch = np.array(float(bits), np.float16).tobytes()
    data = bytearray(p.data)
    data[pos : pos + len(patch)] = patch
    p.data = bytes(data)
    return f"{bits} scale in {name}"


def mutate_bytes(rng: random.Random, raw: bytes, head_end: int) -> tuple[bytes, str]:
    """Blind edits of the header, metadata and tensor-info bytes, or a truncation."""
    out = bytearray(raw)
    op = rng.randrange(4)
    pos = rng.randrange(head_end)
    if op == 0:
        out[pos] ^= 1 << rng.randrange(8)
        return bytes(out), f"bit flip at {pos}"
    if op == 1:
        value = rng.choice([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1])
        width = rng.choice([4, 8])
        out[pos : pos + width] = struct.pack("<Q", value)[:width]
        return bytes(out[: len(raw)]), f"{8 * width}-bit {value} at {pos}"
    if op == 2:
        out[pos : pos + 4] = bytes(rng.randrange(256) for _ in range(4))
        return bytes(out[: len(raw)]), f"random bytes at {pos}"
    cut = rng.randrange(len(raw)) if rng.random() < 0.3 else pos
    return raw[:cut], f"truncated at {cut}"


def make_case(case: int) -> tuple[bytes, str]:
    """The mutated file of case number `case`, and what was done to it."""
    rng = random.Random(case)
    name = SEED_FILES[case % len(SEED_FILES)]
    template = rng.choice([None, SMOLLM3_TEMPLATE.read_text(), HOSTILE_TEMPLATES[-1], rng.choice(HOSTILE_TEMPLATES)])
    parts = seed(name, template)
    steps = [name, "with template" if template is not None else "no template"]
    blind = rng.random() < 0.25  # blind byte edits only; otherwise one to three structural edits
    for _ in range(0 if blind else rng.choice([1, 1, 1, 2, 3])):
        op = rng.random()
        if op < 0.6:
            steps.append(mutate_metadata(rng, parts))
        elif op < 0.8:
            steps.append(mutate_tensor_info(rng, parts))
        else:
            steps.append(mutate_scales(rng, parts))
    raw = encode(parts)
    if blind or rng.random() < 0.1:
        raw, what = mutate_bytes(rng, raw, len(raw) - len(parts.data))
        steps.append(what)
    return raw, "; ".join(steps)


# -- the property ------------------------------------------------------------------------------


# The one refusal the inspector cannot foresee, since it does not run the model (issue 15).
OVERFLOW = "the model computed NaN or Inf logits: its weights overflow float32"


class PropertyViolation(AssertionError):
    pass


def _one_line_error(result, path: str, command: str) -> str:
    """The CLI ended in exit 2 and one `error: ...` line on stderr; return that line."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise PropertyViolation(f"{command}: traceback\n{tb}")
    lines = result.stderr.strip().splitlines()
    lines = [l for l in lines if not l.startswith("nanosmol: compiling kernels")]
    if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        raise PropertyViolation(f"{command}: exit {result.exit_code}, stderr {result.stderr!r}")
    return lines[0]


def drive(path: str, n_ctx: int = 64) -> tuple[str, str]:
    """Every entry point on one file: (outcome, error line or ""). Raises PropertyViolation."""
    from nanosmol.cli import main

    runner = CliRunner()
    text = runner.invoke(main, ["inspect-gguf", "--metadata", path])
    inspected = runner.invoke(main, ["inspect-gguf", "--json", path])
    if text.exit_code != inspected.exit_code or text.exception is not None and text.exit_code != 2:
        _one_line_error(text, path, "inspect-gguf (text)")
    ran = runner.invoke(main, ["run", "-m", path, "-c", str(n_ctx), "-t", "1", "-n", "2", "--temp", "0", "hello"])
    if inspected.exit_code != 0:
        error = _one_line_error(inspected, path, "inspect-gguf")
        run_error = _one_line_error(ran, path, "run")
        if run_error != error:
            raise PropertyViolation(f"inspect-gguf and run name different problems: {error!r} / {run_error!r}")
        return "parse error", error
    if inspected.exception is not None:
        _one_line_error(inspected, path, "inspect-gguf")
    import json

    verdict = json.loads(inspected.stdout)["validation"]
    if ran.exit_code == 0 and ran.exception is None:
        if not verdict["runnable"]:
            raise PropertyViolation(f"run ran a file inspect-gguf refuses: {verdict['problems']}")
        return "runs", ""
    error = _one_line_error(ran, path, "run")
    if verdict["runnable"] and error.endswith(OVERFLOW):
        return "overflows", error  # finite weights whose products overflow: only a forward pass shows it
    if verdict["runnable"]:
        raise PropertyViolation(f"inspect-gguf says OK, run says {error!r}")
    return "refused", error
