"""Names (and colours) of a label image's values: a sidecar table beside it, or the bundled atlas's.

The reader names the Labels layer of a label NIfTI with them; the Regions panel matches
an ROI atlas's label names to a region result's regions. Both import them from here.
A sidecar is ``NAME.tsv``, ``NAME.csv``, ``NAME.txt``, ``NAME_labels.tsv``,
``NAME_labels.csv`` or a FreeSurfer-style colour table ``NAME.lut``/``NAME_LUT.txt``
(``index name [r g b [a]]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def nifti_stem(path: Path) -> str:
    """The file name without ``.nii`` or ``.nii.gz``: the layer's name, the stem of its sidecars."""
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def _sidecar_candidates(path: Path) -> list[Path]:
    stem = nifti_stem(path)
    names = [f"{stem}.tsv", f"{stem}.csv", f"{stem}.txt", f"{stem}_labels.tsv", f"{stem}_labels.csv",
             f"{stem}.lut", f"{stem}_LUT.txt"]
    return [path.with_name(n) for n in names]


def label_table(path: str | os.PathLike):
    """Names (and colours) of a label image's values: a sidecar table or the bundled atlas's.

    Returns
    -------
    DataFrame with columns ``index``, ``name`` and, when given, ``r``, ``g``, ``b``
    (``a``), or ``None``.
    """
    import pandas as pd

    path = Path(path)
    for candidate in _sidecar_candidates(path):
        if candidate.is_file():
            table = _read_label_table(candidate)
            if table is not None:
                return table
    names = _bundled_network_names(path)
    if names:
        table = pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names})
        table.attrs["kind"] = "network"
        return table
    return None


def _read_label_table(path: Path):
    """A sidecar of label names: a table with header (index/label/value + name/network/region
    [+ r g b a]) or a FreeSurfer-style colour table (``index name r g b a``, ``#`` comments)."""
    import pandas as pd

    text = path.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return None
    sep = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    first = lines[0].split(sep) if sep else lines[0].split()
    has_header = not first[0].strip().lstrip("-").isdigit()
    rows = [ln.split(sep) if sep else ln.split() for ln in lines[1 if has_header else 0:]]
    header = [h.strip().lower() for h in first] if has_header else None
    df = pd.DataFrame(rows)
    if header is not None and len(header) == df.shape[1]:
        df.columns = header
        index_col = next((c for c in ("index", "label", "value", "id") if c in header), header[0])
        name_col = next((c for c in ("name", "network", "region", "label_name", "labelname")
                         if c in header and c != index_col), None)
        if name_col is None:
            return None
        out = pd.DataFrame({"index": pd.to_numeric(df[index_col], errors="coerce"),
                            "name": df[name_col].astype(str).str.strip()})
        if name_col == "network":
            out.attrs["kind"] = "network"
        for c in ("r", "g", "b", "a"):
            if c in header:
                out[c] = pd.to_numeric(df[c], errors="coerce")
    else:
        out = pd.DataFrame({"index": pd.to_numeric(df[0], errors="coerce"),
                            "name": df[1].astype(str).str.strip() if df.shape[1] > 1 else ""})
        if df.shape[1] >= 5:
            for c, col in zip("rgb", (2, 3, 4)):
                out[c] = pd.to_numeric(df[col], errors="coerce")
            if df.shape[1] >= 6:
                # FreeSurfer's 4th colour value is transparency (0 = opaque)
                out["a"] = 255 - pd.to_numeric(df[5], errors="coerce")
    out = out.dropna(subset=["index"])
    if not len(out):
        return None
    out["index"] = out["index"].astype(int)
    kind = out.attrs.get("kind")
    out = out.reset_index(drop=True)
    if kind:
        out.attrs["kind"] = kind
    return out


def _bundled_network_names(path: Path) -> list[str] | None:
    """Network names when ``path`` is one of the bundled label atlases."""
    from .. import datasets

    for name in datasets.BUNDLED_ATLASES:
        if datasets.atlas_kind(name) != "labels":
            continue
        try:
            if Path(datasets.atlas_path(name)).resolve() == path.resolve():
                return list(datasets.atlas_labels(name))
        except (OSError, ValueError):
            continue
    return None
