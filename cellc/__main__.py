"""`python -m cellc ...` is the `cellc` command."""
import sys

from .tools.cli import main

sys.exit(main())
