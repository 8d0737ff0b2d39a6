"""The napari plugin: the only part of napari-brainorg that imports napari or Qt.

- :mod:`.reader`: NIfTI volumes and result folders, in their world coordinates
- :mod:`.layers`: the one place where volumes and results become layers
- :mod:`.explorer`: the atom explorer (table, map, time course, layer histogram)
- :mod:`.networks_widget`: functional-brain-network overlays
- :mod:`.pipeline_widget` and :mod:`.workers`: run the pipeline in a thread
- :mod:`.sample_data`: the quick demo result
- :mod:`.view`: the window that ``brainorg view DIR`` opens
"""
