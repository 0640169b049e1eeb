"""adrender model core: the HunyuanVideo / HunyuanCustom models and their inference math, in pure PyTorch.

Reads local files only; knows nothing of object stores, registries or orchestration.
"""
