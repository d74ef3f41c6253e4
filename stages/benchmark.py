"""DVC stage ``benchmark``: speed of every schedule against full attention, beside its FLOP ceiling.

Thin wrapper: params.yaml is validated by ``lmask.params.load_params`` and ``benchmark:`` by ``lmask.benchmark``.
"""

from lmask.benchmark import main

if __name__ == "__main__":
    main()
