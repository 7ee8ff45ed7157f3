"""``python -m qscope_lab.cli``: the same as the ``qscope-lab`` command."""

import sys

from .main import main

sys.exit(main())
