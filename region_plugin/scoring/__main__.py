"""`python -m region_plugin.scoring` is `region-score`."""
import sys

from .cli import main

sys.exit(main())
