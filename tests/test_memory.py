"""The memory estimate and the refusal of a context that cannot fit, against a given memory size."""

from __future__ import annotations

import pytest

from nanosmol.config import ModelConfig
from nanosmol.kv.types import CacheTypes
from nanosmol.memory import ContextTooLargeError, check_fits, memory_estimate

GIB = 2**30
# SmolLM3-3B's shapes (36 layers, 16 heads, 4 KV heads of 128) and the 3B Q4_K_M file's weights.
SMOLLM3 = ModelConfig(arch="smollm3", n_layer=36, n_embd=2048, n_ff=11008, n_head=16, n_head_kv=4, head_dim=128,
                      vocab_size=128256, n_ctx_train=65536, rope_theta=5e6, rms_eps=1e-6, tied_embeddings=True,
                      nope_layers=())
WEIGHTS = int(1.78 * GIB)


def need(ctx: int, types: CacheTypes) -> int:
    return memory_estimate(SMOLLM3, WEIGHTS, ctx, types)["total"]


@pytest.mark.parametrize("available_gib", [3, 4, 6])
def test_a_refusal_names_choices_that_fit(available_gib):
    available, f16 = available_gib * GIB, CacheTypes()
    with pytest.raises(ContextTooLargeError) as refused:
        check_fits(SMOLLM3, WEIGHTS, 65536, f16, available)
    message = str(refused.value)
    assert message.startswith(f"--ctx 65536 with a K f16, V f16 cache needs {need(65536, f16) / GIB:.1f} GiB")
    advice = message.split(": use ")[1].split(" or ")
    for choice in advice:
        if choice.startswith("--ctx "):
            ctx = int(choice.split()[1])
            assert need(ctx, f16) <= available < need(ctx + 256, f16)
        else:
            _, k, _, v = choice.split()
            assert k == v and need(65536, CacheTypes(k, v)) <= available


def test_what_fits_passes():
    check_fits(SMOLLM3, WEIGHTS, 65536, CacheTypes("q4_0", "q4_0"), 5 * GIB)
    check_fits(SMOLLM3, WEIGHTS, 10**9, CacheTypes(), None)  # memory unknown: no refusal
