"""``python -m omniq_nb``: the same as the ``omniq-nb`` command."""

import sys

from omniq_nb.cli import main

sys.exit(main())
