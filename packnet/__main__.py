"""`python -m packnet ...` is the `packnet` command."""
import sys

from .cli import main

sys.exit(main())
