"""``python -m superionic.cli``: the same as the ``superionic`` command."""

import sys

from superionic.cli import app

sys.exit(app())
