"""``python -m napari_brainorg.cli``: the ``brainorg`` command."""

import sys

from . import main

# guarded: Dask worker processes (brainorg run --jobs N) import this module again
if __name__ == "__main__":
    sys.exit(main())
