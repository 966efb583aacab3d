"""Writing GGUF files: the atomic, one-tensor-at-a-time writer, the quantizer of GGUF files and
the converter of Hugging Face folders."""

from nanosmol.convert.hf_to_gguf import ConvertError, convert_folder
from nanosmol.convert.quantize_gguf import QuantizeError, quantize_gguf
from nanosmol.convert.writer import MetadataEntry, Progress, TensorPlan, atomic_file, progress_line, write_gguf

__all__ = ["ConvertError", "MetadataEntry", "Progress", "QuantizeError", "TensorPlan", "atomic_file", "convert_folder",
           "progress_line", "quantize_gguf", "write_gguf"]
