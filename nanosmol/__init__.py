"""nanosmol: run SmolLM2 and SmolLM3 GGUF models on a CPU with NumPy and Numba."""

__version__ = "0.1.0"
