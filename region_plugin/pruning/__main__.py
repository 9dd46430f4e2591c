"""`python -m region_plugin.pruning` is `region-prune`."""
import sys

from .cli import main

sys.exit(main())
