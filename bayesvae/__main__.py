"""``python -m bayesvae``: the command line (:func:`bayesvae.cli.main`)."""

from __future__ import annotations

import sys

from bayesvae.cli import main

if __name__ == "__main__":
    sys.exit(main())
