"""The Numba target: the program tree printed as Numba and NumPy code, the runtime every
generated module carries, and the module laid out by a Jinja2 template."""
