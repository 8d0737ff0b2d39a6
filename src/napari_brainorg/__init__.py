"""napari-brainorg: brain-like functional organization inside language models.

The science lives in plain-array modules (``io`` -> ``features`` -> ``sparse`` ->
``encoding`` -> ``networks`` -> ``analyses`` -> ``pipeline``); the napari plugin
(``_napari``) and the command line (``cli``) sit on top. Importing this package
imports neither torch nor napari.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
