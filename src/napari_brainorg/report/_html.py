"""Small pieces the report is made of: escaped text, inline images, tables, rounded numbers,
and machine paths turned into paths relative to the result folder."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

import numpy as np


def _esc(text) -> str:
    return html.escape(str(text))


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img_file(path: Path | None, alt: str, cls: str = "fig") -> str:
    if path is None or not Path(path).exists():
        return ""
    return f'<img class="{cls}" alt="{_esc(alt)}" src="{_png_data_uri(Path(path).read_bytes())}">'


def _img_png(png: bytes, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{_esc(alt)}" src="{_png_data_uri(png)}">'


def figure_png(fig, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------------------- numbers


def num(value, sig: int = 3) -> str:
    """A number rounded to what it can carry: ``sig`` significant digits, integers as integers.

    Parameters
    ----------
    value : number or None
    sig : int
        Significant digits of a non-integer.

    Returns
    -------
    str
        ``""`` for None or NaN; no scientific notation between 1e-4 and 1e6.
    """
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) < 1e-4:
        return f"{v:.1e}"
    digits = max(sig - 1 - int(math.floor(math.log10(abs(v)))), 0)
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fixed(value, digits: int = 3, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (``""`` for None/NaN), a leading + when ``sign``."""
    if value is None or not math.isfinite(float(value)):
        return ""
    return f"{float(value):{'+' if sign else ''}.{digits}f}"


def p_text(p) -> str:
    """A p or q value as it is reported: two significant digits, ``< 0.0001`` below."""
    if p is None or math.isnan(float(p)):
        return "n/a"
    p = float(p)
    if p < 1e-4:
        return "&lt; 0.0001"
    return f"= {num(p, 2)}"


def ci_text(ci, digits: int = 3, sign: bool = False) -> str:
    """``[95% CI lo, hi]`` (``""`` when the interval is missing or NaN: one subject)."""
    if not ci or ci[0] is None or ci[1] is None or not math.isfinite(float(ci[0])):
        return ""
    return f" [95% CI {fixed(ci[0], digits, sign)}, {fixed(ci[1], digits, sign)}]"


def counts_text(counts: dict) -> str:
    """``{"activated": 3, "deactivated": 4}`` as words: ``3 activated, 4 deactivated``."""
    return ", ".join(f"{int(n)} {_esc(k)}" for k, n in counts.items())


def _table_html(df, max_rows: int = 200, float_format: str | None = None, cls: str = "",
                formats: dict | None = None) -> str:
    """A DataFrame as an HTML table, floats rounded by :func:`num` (or ``float_format``, or the
    column's function in ``formats``: a fixed number of decimals down a column)."""
    if df is None or len(df) == 0:
        return "<p class='muted'>(empty)</p>"
    df = df.head(max_rows)
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    by_column = [(formats or {}).get(c) for c in df.columns]
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v, column_format in zip(rec, by_column):
            if isinstance(v, (float, np.floating)):
                text = "" if np.isnan(v) else (column_format(v) if column_format else
                                               float_format.format(v) if float_format else num(v))
                cells.append(f"<td class='n'>{text}</td>")
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                cells.append(f"<td class='n'>{int(v)}</td>")
            else:
                cells.append(f"<td>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _kv_table(rows) -> str:
    """Two-column table of ``(name, value)`` pairs (values escaped, numbers rounded)."""
    return "<table class='kv'>" + "".join(
        f"<tr><th>{_esc(k)}</th><td>{num(v) if isinstance(v, (float, np.floating)) else _esc(v)}</td></tr>"
        for k, v in rows) + "</table>"


# ----------------------------------------------------------------------------- paths

# an absolute POSIX path (at least two parts) or a Windows drive path, not inside a word or URL
_ABS_PATH = re.compile(r"(?<![\w.:/\\-])(?:/[\w.@+~-]+(?:/[\w.@+~-]*)+|[A-Za-z]:\\[^\s'\",;)]+)")


def relative_paths(text: str, root: str | Path | None = None, *aliases: str | Path) -> str:
    """``text`` with no machine path: paths in the result folder relative to it, files of
    this package relative to the package, any other absolute path by its file name.

    Parameters
    ----------
    text : str
    root : path, optional
        The result folder.
    *aliases : path
        Other names of the result folder: where the run wrote it (its configuration's
        ``out``) when the folder was moved or copied since.

    Returns
    -------
    str
    """
    text = str(text)
    names: set[str] = set()
    for folder in ([root] if root is not None else []) + [a for a in aliases if a]:
        folder = Path(folder)
        names |= {str(folder), str(folder.resolve()), str(folder.absolute())}
    # absolute names only: a relative one ("result") would also match ordinary words
    prefixes = sorted((n for n in names if Path(n).is_absolute() and n != Path(n).anchor), key=len, reverse=True)
    package = Path(__file__).resolve().parent.parent
    prefixes_pkg = sorted({str(package), str(Path(__file__).parent.parent)}, key=len, reverse=True)
    for prefix in prefixes:  # "<root>/a/b" -> "a/b", "<root>" alone -> "."
        pattern = r"(?<![\w.-])" + re.escape(prefix) + r"(?:[/\\]|(?![\w.-]))"
        text = re.sub(pattern, lambda m: "" if m.group(0)[-1:] in "/\\" else ".", text)
    for prefix in prefixes_pkg:
        text = text.replace(prefix, package.name)

    def file_name(match: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group(0)) if p]
        if package.name in parts[:-1]:  # a file of this package in another checkout or install
            return "/".join(parts[parts.index(package.name):])
        return parts[-1] if parts else match.group(0)

    return _ABS_PATH.sub(file_name, text)
