"""lmask: layer-wise attention windows for GPT-2, as a reproducible DVC pipeline.

Importing lmask registers the "lmask" attention with transformers (see lmask.model).
"""

from lmask.model import apply_windows, load_model


def __getattr__(name: str):
    # Lazy, so `python -m lmask.schedule` does not import the module twice.
    if name == "layer_windows":
        from lmask.schedule import layer_windows

        return layer_windows
    raise AttributeError(name)


__all__ = ["apply_windows", "layer_windows", "load_model"]
