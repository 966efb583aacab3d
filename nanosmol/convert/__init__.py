"""Writing GGUF files: the atomic, one-tensor-at-a-time writer and the quantizer of GGUF files."""

from nanosmol.convert.quantize_gguf import QuantizeError, quantize_gguf
from nanosmol.convert.writer import MetadataEntry, Progress, TensorPlan, atomic_file, progress_line, write_gguf

__all__ = ["MetadataEntry", "Progress", "QuantizeError", "TensorPlan", "atomic_file", "progress_line", "quantize_gguf",
           "write_gguf"]
