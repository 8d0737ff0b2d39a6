"""Sphinx configuration of the napari-brainorg documentation (``sphinx-build -W docs docs/_build/html``).

The tutorial and the gallery are notebooks in MyST markdown, executed while the site
builds (myst-nb): their outputs and figures are the code's, from one small study that the
first page to run writes and the others reuse (``$BRAINORG_DOCS_STUDY``, beside the HTML).
The configuration, command-line and result-folder references are generated from the
code (``_ext/brainorg_docs.py``).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "src")))
sys.path.insert(0, os.path.join(HERE, "_ext"))

project = "napari-brainorg"
author = "the napari-brainorg developers"
copyright = "2026, the napari-brainorg developers"

from napari_brainorg import __version__ as release  # noqa: E402

version = release
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",  # MyST markdown (architecture.md, CHANGELOG.md) and executed notebooks
    "brainorg_docs",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" as fields: an attribute named like another class's (tr) is no ambiguous target
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections say the types and shapes
autodoc_mock_imports = []
autosummary_generate = False
smartquotes = False  # option names (--out) and quoted values stay as typed
highlight_language = "text"  # literal blocks (file layouts, tables) are not Python
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "jupyter_execute"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# --- executed notebooks (tutorial, gallery)
# "cache": a page runs again only when its code changed (jupyter-cache beside the HTML); a
# fresh build (CI) runs each page once, the study itself once (about a minute on 2 cores).
# After a change to the package, BRAINORG_DOCS_EXECUTE=force (or a fresh output folder)
# runs the pages again: cached outputs do not see changes outside the pages' code.
nb_execution_mode = os.environ.get("BRAINORG_DOCS_EXECUTE", "cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # tqdm bars; the pages print the run's warnings themselves
nb_render_image_options = {"align": "center"}

# --- theme
html_theme = "pydata_sphinx_theme"
html_title = f"napari-brainorg {release}"
html_static_path = ["_static"]
html_css_files = ["brainorg.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# no left column: the top bar and each page's own contents are the navigation, and code,
# tables and figures get the width
html_sidebars = {"**": []}
nitpicky = False
