"""``python -m sim``: run a rig of simulated hubs (same options as ``station sim``)."""

import sys

from sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
