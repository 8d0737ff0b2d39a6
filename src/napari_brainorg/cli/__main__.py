"""``python -m napari_brainorg.cli``: the ``brainorg`` command."""

import sys

from . import main

sys.exit(main())
