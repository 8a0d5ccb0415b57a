"""``python -m fa_utils``: :func:`fa_utils.runner.main`."""
import signal

from .runner import main

# Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (a background job)
signal.signal(signal.SIGINT, signal.default_int_handler)
raise SystemExit(main())
