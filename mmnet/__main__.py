"""`python -m mmnet` is the `mmnet` command."""

import sys

from .cli import main

sys.exit(main())
