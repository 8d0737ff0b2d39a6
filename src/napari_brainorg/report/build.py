"""The report put together: header, the answer, the sections, the styles and the script."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__
from .._progress import check_cancel
from ..io.results import REPORT, SUMMARY, ResultFolder
from ._html import _esc
from .answer import answer_section
from .methods import REFERENCES, methods_paragraph
from .sections import (comparison_section, data_section, model_section, provenance_section, validation_section,
                       warnings_section)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1240px;margin:.8em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.35em;margin:.2em 0;display:inline-block;margin-right:.8em}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
h3{margin:.9em 0 .4em}h4{margin:.8em 0 .3em}
.dates{color:#666;font-size:.85em;display:inline-block;margin:0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.fit{display:table;width:100%;table-layout:auto}table.fit td,table.fit th{white-space:normal}
table.fit td.n{white-space:normal}table.fit td.nw{white-space:nowrap}
.muted{color:#888}.banner{background:#fff3cd;border:1px solid #e0c36b;padding:.35em .8em;border-radius:4px;
margin:.3em 0;font-size:.9em}
.card{border:1px solid #d6dbe1;border-radius:6px;padding:.2em .9em .5em;margin:.5em 0;background:#fbfcfd}
.card h2{margin:.3em 0 .4em;border:0;padding:0;font-size:1.3em}.card h4{margin:.6em 0 .2em}
.linkcount{margin:.2em 0}
.tiles{display:flex;flex-wrap:wrap;gap:.6em}.tile{flex:1 1 200px;border:1px solid #e1e4e8;border-radius:5px;
padding:.3em .6em;background:#fff}.tile .label{font-size:.8em;color:#555;text-transform:uppercase;letter-spacing:.03em}
.tile .value{font-size:1.45em;font-weight:600;font-variant-numeric:tabular-nums}.tile.main .value{color:#0b5394}
.tile .detail{font-size:.78em;color:#555;line-height:1.3}
.answer-grid{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1em;margin-top:.4em}
@media (max-width:900px){.answer-grid{grid-template-columns:1fr}}
ul.verdict{list-style:none;padding:0;margin:.2em 0}ul.verdict li{padding:.2em .5em;margin:.25em 0;border-radius:3px;
font-size:.86em;line-height:1.35}li.finding{background:#eef6ee;border-left:4px solid #4a9a4a}
li.finding-warn{background:#fdecea;border-left:4px solid #d9534f}.mark{font-weight:bold}
td.lead{color:#1d6b1d;font-weight:600}td.nolead{color:#a33}
.recovery{font-size:.9em;margin:.3em 0}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:560px}
figure img,.fig{max-width:100%}figcaption,.caption{font-size:.85em;color:#555}
.mapblock{border-top:1px solid #eee;padding-top:.3em;margin-bottom:.8em}
.mapcols{display:grid;grid-template-columns:minmax(0,640px) minmax(0,1fr);gap:1em;align-items:start}
@media (max-width:1100px){.mapcols{grid-template-columns:1fr}}
.statmap,.timecourse{max-width:100%;display:block}.atomabout{font-size:.9em;margin:.3em 0}
table.peaks{font-size:.8em}
.atom{display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap;margin-top:.5em}.atom[hidden]{display:none}
.glass{image-rendering:pixelated;border:1px solid #eee;max-width:640px}.atominfo{font-size:.9em;max-width:520px}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em}
.warn{background:#fdecea;border-left:4px solid #d9534f;padding:.3em .6em;margin:.3em 0;font-size:.9em}
nav{font-size:.9em}nav a{margin-right:1em}
"""

_JS = """
document.querySelectorAll('.viewer').forEach(function(v){
  var sel=v.querySelector('.atomselect');
  function show(i){v.querySelectorAll('.atom').forEach(function(p){p.hidden=(p.dataset.atom!==String(i));});
    sel.value=String(i);}
  sel.addEventListener('change',function(){show(sel.value);});
  v.querySelector('.prev').addEventListener('click',function(){show(Math.max(0,sel.selectedIndex-1));});
  v.querySelector('.next').addEventListener('click',function(){
    show(Math.min(sel.options.length-1,sel.selectedIndex+1));});
});
"""


def _dates(result: ResultFolder) -> str:
    """When the run finished (``summary.json`` written) and when this report was built (UTC)."""
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((result.path / SUMMARY).stat().st_mtime))
    built = time.strftime("%Y-%m-%d", time.gmtime())
    return f"<span class='dates'>Run finished {finished}; report built {built} by napari-brainorg {__version__}.</span>"


def _methods_section(result: ResultFolder) -> str:
    methods, cites = methods_paragraph(result)
    for i, key in enumerate(cites, 1):
        methods = methods.replace(f"[{key}]", f'<a href="#ref-{key}">[{i}]</a>')
    refs = "".join(f'<li id="ref-{k}">{REFERENCES[k]}</li>' for k in cites)
    return f'<section id="methods"><h2>Methods</h2><p>{methods}</p><h3>References</h3><ol>{refs}</ol></section>'


def build_report(result: ResultFolder | str | os.PathLike, cancel=None) -> str:
    """The report of a result folder as one HTML string (nothing is refitted).

    Parameters
    ----------
    result : ResultFolder or path
        A finished result folder (it holds ``summary.json``).
    cancel : object with ``is_set()``, optional
        Checked between sections and atoms (``CancelledError`` once set).

    Returns
    -------
    str
        A complete, self-contained HTML document: the answer first (held-out r with its CI,
        chance, noise ceiling, verdicts, declared links), then data, methods, validation,
        each model's maps and atoms, the comparison, the warnings and the provenance.
    """
    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    models = result.models
    title = f"napari-brainorg report: {Path(result.path).resolve().name}"
    banner = ("<p class='banner'><b>SIMULATED fMRI.</b> The subjects of this run are simulated with a "
              "known ground truth (planted atom &rarr; network links); no real brain data was analysed.</p>"
              if result.simulated else "")
    comparison = comparison_section(result)
    nav = ("<nav><a href='#answer'>Answer</a><a href='#data'>Data</a><a href='#methods'>Methods</a>"
           "<a href='#validation'>Validation</a>"
           + "".join(f"<a href='#model-{i}'>{_esc(m)}</a>" for i, m in enumerate(models))
           + ("<a href='#comparison'>Comparison</a>" if comparison else "")
           + "<a href='#warnings'>Warnings</a><a href='#provenance'>Provenance</a></nav>")
    sections = []
    for make in (answer_section, data_section, _methods_section, validation_section,
                 *(lambda r, m=m, i=i: model_section(r, m, i, cancel=cancel) for i, m in enumerate(models)),
                 lambda r: comparison, warnings_section, lambda r: provenance_section(r, __version__)):
        check_cancel(cancel)
        sections.append(make(result))
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body><h1>{_esc(title)}</h1>{_dates(result)}{banner}{nav}
{body}
<script>{_JS}</script>
</body></html>
"""


def write_report(result: ResultFolder | str | os.PathLike, out: str | os.PathLike | None = None,
                 cancel=None) -> Path:
    """Write the report of ``result`` (default ``<result>/report.html``) atomically; return its path.

    ``cancel`` (an object with ``is_set()``): once set, :func:`build_report` stops with
    ``CancelledError`` and no file is written (``brainorg report DIR`` writes it later)."""
    from ..io.results import atomic_path

    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    target = Path(out) if out is not None else result.path / REPORT
    text = build_report(result, cancel=cancel)
    with atomic_path(target, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
