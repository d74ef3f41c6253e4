"""The attention paths: which ones params.yaml may force, and how often each ran. Pure Python: no torch import
(``lmask.param_sections`` validates ``attention.backend`` against this list without loading the kernels).

The attention files own these: ``lmask.attention`` dispatches over the paths, and every path that decides for itself
whether it ran (``lmask.flex`` falls back to ``blocked``) counts itself here, without importing the dispatcher.
"""

from __future__ import annotations

import collections

ATTENTION_BACKENDS = ("auto", "blocked", "flex", "masked")  # paths attention.backend may force (lmask.attention)

# Attention calls per path actually taken (``flex_fallback``: a flex call that failed and ran blocked instead).
# Training and benchmark records report these, so a silent fallback shows up in the results.
PATH_COUNTS: collections.Counter[str] = collections.Counter()

__all__ = ["ATTENTION_BACKENDS", "PATH_COUNTS"]
