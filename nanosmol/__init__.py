"""nanosmol: run SmolLM2 and SmolLM3 GGUF models on a CPU with NumPy and Numba."""

__version__ = "0.1.0"
__all__ = ["ChatTemplateError", "Model", "load", "__version__"]


def __getattr__(name):
    # Lazy, so that `nanosmol inspect-gguf` and friends start without importing the engine.
    if name in ("ChatTemplateError", "Model", "load"):
        from nanosmol import api

        return getattr(api, name)
    raise AttributeError(f"module 'nanosmol' has no attribute {name!r}")
