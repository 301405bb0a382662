"""Tools for people: the `cellc` command line, `show`, `graph`, `docs`."""
