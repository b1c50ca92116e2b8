"""`python -m dupmae_eval` runs the command line."""

import sys

from dupmae_eval.cli import main

sys.exit(main())
