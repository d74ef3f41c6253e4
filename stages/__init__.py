"""DVC stage entry points: `python -m stages.<name>`; each reads params.yaml and calls lmask."""
