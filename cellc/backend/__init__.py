"""The back end: the derivation lowered to a program tree (`tree.py`: language-neutral
nodes; `storage.py`, `kernels.py`, `program.py`: pure functions that build it), then one
printer per target (`numba/`)."""
