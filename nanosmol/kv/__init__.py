"""The KV cache: its types and sizes (types.py, no kernels) and its ring buffer (cache.py)."""
