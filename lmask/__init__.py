"""lmask: layer-wise attention windows for GPT-2, as a reproducible DVC pipeline.

Importing the package is cheap (no torch): stages that only read params or write reports stay fast. The model API is
loaded on first use: ``lmask.apply_windows``, ``lmask.load_model`` (lmask.model), ``lmask.layer_windows``
(lmask.schedule).
"""

from __future__ import annotations

import importlib

_LAZY = {"apply_windows": "lmask.model", "load_model": "lmask.model", "layer_windows": "lmask.schedule"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmask' has no attribute {name!r}")


__all__ = list(_LAZY)
