"""The reference semantics: a NumPy interpreter of the cell IR, which every compiled kernel
is tested against."""
