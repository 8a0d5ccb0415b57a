"""``python -m fa_utils``: see :mod:`fa_utils.runner`."""
import sys

from .runner import main

sys.exit(main())
