"""`python -m protoprune ...`: the same as the `protoprune` command."""

import sys

from .cli import main

sys.exit(main())
