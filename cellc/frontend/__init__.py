"""Stage 1, the front end: a spec file (TOML data, never executed) to the cell IR."""
