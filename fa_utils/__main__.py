"""``python -m fa_utils``: see :mod:`fa_utils.runner`."""
from .runner import main

raise SystemExit(main())
