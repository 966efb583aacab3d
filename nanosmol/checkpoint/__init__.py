"""One place that turns a path into weights, hyperparameters, tokenizer and chat template.

A GGUF file is read by GGUFFile; a Hugging Face folder by HFFolder, which presents itself
the same way (GGUF metadata keys, tensor names, layouts and raw bytes): the model code
sees one kind of source whatever the format.
"""

from __future__ import annotations

import os

from nanosmol.checkpoint.hf_folder import HFFolder, is_hf_folder
from nanosmol.checkpoint.safetensors_shards import CheckpointError
from nanosmol.gguf_file import GGUFFile
from nanosmol.tokenizer import Tokenizer

__all__ = ["CheckpointError", "HFFolder", "load_tokenizer", "open_checkpoint"]


def open_checkpoint(path: str | os.PathLike) -> GGUFFile | HFFolder:
    """A GGUF file, or a Hugging Face checkpoint folder shown as one."""
    return HFFolder(path) if is_hf_folder(path) else GGUFFile(path)


def load_tokenizer(checkpoint: GGUFFile | HFFolder) -> Tokenizer:
    """The folder's tokenizer.json as is, or the tokenizer rebuilt from the GGUF vocabulary."""
    if isinstance(checkpoint, HFFolder):
        return checkpoint.tokenizer
    return Tokenizer.from_metadata(checkpoint.metadata)
