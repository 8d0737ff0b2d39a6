"""The report's sections after the answer: the data, the validation, each model (maps,
figures, atoms, links), the model comparison, the warnings and the provenance."""

from __future__ import annotations

from pathlib import Path

from ..io.results import ResultFolder
from ._html import _esc, _img_file, _kv_table, _table_html, counts_text, fixed, num, relative_paths
from .atoms import _atom_table, _atom_viewer, declared_links
from .maps import maps_section


def _relative(text: str, result: ResultFolder) -> str:
    """``text`` with paths relative to the result folder (also under the name the run wrote it to)."""
    return relative_paths(text, result.path, result.config().get("out") or "")


def data_section(result: ResultFolder) -> str:
    """The question and the data: stories, volumes, models, fMRI, subjects, atlases (HTML)."""
    s, cfg = result.summary, result.config()
    fmri = s.get("fmri", {})
    stories = s.get("stories") or []
    story = (("story", Path(str(cfg.get("story", {}).get("path", "?"))).name) if len(stories) < 2 else
             ("stories", ", ".join(f"{st.get('story')} ({st.get('n_volumes')} volumes)" for st in stories)))
    subjects = fmri.get("n_subjects") or len(fmri.get("subjects") or []) or (
        (cfg.get("fmri", {}).get("simulate") or {}).get("n_subjects", "?"))
    rows = [
        story,
        ("volumes", f"{s.get('n_volumes', '?')} at TR {num(s.get('tr', '?'))} s"),
        ("language models", ", ".join(f"{m} ({s.get('model_sources', {}).get(m, m)})" for m in result.models)),
        ("fMRI", "SIMULATED subjects" if result.simulated else
         _relative(fmri.get("source") or fmri.get("kind") or "user data", result)),
        ("subjects", subjects),
        ("atlases", ", ".join(result.atlas_names())),
        ("wall time", f"{num(s['wall_time_s'])} s" if s.get("wall_time_s") is not None else "?"),
    ]
    question = ("Do the artificial neurons of these language models organise into sub-groups (atoms) whose "
                "time courses, mapped onto the brain, line up with known functional brain networks, and how "
                "do the models compare?")
    return f"<section id='data'><h2>Question and data</h2><p>{question}</p>{_kv_table(rows)}</section>"


def validation_section(result: ResultFolder) -> str:
    """The planted links against the declared ones (simulated data), or what validates real data."""
    rec = result.recovery()
    if not rec:
        return ("<section id='validation'><h2>Validation</h2><p class='muted'>Real data: there is no ground "
                "truth. The held-out r beside its chance level and the noise ceiling (above), and the "
                "permutation nulls of the network tests, are the validation.</p></section>")
    words = {"precision": "precision (declared links that were planted)", "recall": "recall (planted links found)",
             "f1": "F1", "tp": "planted links found", "fp": "false positives", "fn": "planted links missed",
             "fp_partial": "false positives on a planted atom's other networks", "n_tests": "tests made",
             "n_declared": "links declared", "n_expected": "links expected (planted, as scored)",
             "false_positive_rate": "false-positive rate", "driving_model": "model that drove the simulation",
             "sources": "sources of the planted signal"}
    rows = [(words.get(k, k.replace("_", " ")),
             fixed(v, 2) if isinstance(v, float) and not float(v).is_integer() else num(v))
            for k, v in rec.items() if not isinstance(v, (dict, list))]
    html = ("<p>The planted atom &rarr; network links (the simulation's ground truth) against the "
            "associations the analysis declared, blind to the truth:</p>" + _kv_table(rows))
    for key in ("planted", "found", "missed", "false_positives"):
        value = rec.get(key)
        if isinstance(value, list) and value:
            html += f"<p><b>{_esc(key.replace('_', ' '))}</b>: {_esc('; '.join(map(str, value)))}</p>"
        elif isinstance(value, dict) and value:
            html += f"<p><b>{_esc(key.replace('_', ' '))}</b>: {counts_text(value)}</p>"
    return f"<section id='validation'><h2>Validation</h2>{html}</section>"


def _model_head(info: dict) -> str:
    """One paragraph: the model's ANs and atoms, its held-out R² in words, its links."""
    if not info:
        return ""
    parts = [f"{info.get('n_ans', '?')} ANs grouped into {info.get('n_atoms', '?')} atoms."]
    med, p95 = info.get("r2_median"), info.get("r2_p95")
    if med is not None:
        kind = {"r2_cv": "Held-out R² of the ridge on the atoms (cross-validated)",
                "r2_sparse": "In-sample R² of the paper's sparse fit"}.get(info.get("r2_kind"), "R²")
        parts.append(f"{kind}: median {fixed(med)} over voxels, 95th percentile {fixed(p95)}"
                     + (" (below 0 where the prediction misses more than the voxel's mean does; the held-out r of "
                        "the first screen is the headline)." if med < 0 else "."))
    if info.get("n_associations"):
        parts.append(f"Declared network links: {counts_text(info['n_associations'])}.")
    return f"<p>{' '.join(parts)}</p>"


def _run_figures(result: ResultFolder, model: str) -> str:
    """The figures the run drew for the model (R² glass brain, layers, atom correlations, associations)."""
    r2_fig = result.figure(f"{model}_r2_cv") or result.figure(f"{model}_r2_sparse")
    figs = [(_img_file(r2_fig, f"{model} R2 map"), "held-out R² (glass brain, group)")]
    for name, caption in ((f"{model}_layer_histograms", "layer histograms of the atoms"),
                          (f"{model}_atom_correlation", "atom time-course correlations")):
        figs.append((_img_file(result.figure(name), caption), caption))
    for p in result.figures():
        if p.stem.startswith(f"{model}_") and p.stem.endswith("_association"):
            figs.append((_img_file(p, p.stem), p.stem.replace(f"{model}_", "").replace("_", " ")))
    return "".join(f"<figure>{img}<figcaption>{_esc(c)}</figcaption></figure>" for img, c in figs if img)


def model_section(result: ResultFolder, model: str, n: int, cancel=None) -> str:
    """A model's section: its numbers, its maps, the run's figures, the atoms, the links (HTML).
    ``cancel`` is checked before each atom's figures (``CancelledError`` once set)."""
    sid = f"model-{n}"
    info = result.summary.get("results", {}).get(model, {})
    assoc = []
    links = declared_links(result, model)
    for part in ("activated", "deactivated") if links is not None else ():
        t = links[links["part"] == part]
        cols = [c for c in ("atom", "atlas", "network", "overlap_rate", "statistic", "effect", "p", "q")
                if c in t.columns]
        assoc.append(f"<h4>Associated networks ({part})</h4>{_table_html(t[cols])}")
    assoc.append(_sensitivity_html(result.summary.get("sensitivity", {}).get(model)))
    return (f'<section id="{sid}"><h2>Model {_esc(model)}</h2>{_model_head(info)}'
            f'<h3 id="{sid}-maps">Maps</h3>{maps_section(result, model, cancel=cancel)}'
            f'<h3>Figures of the run</h3><div class="figs">{_run_figures(result, model)}</div>'
            f"<h3>Atoms</h3>{_atom_viewer(result, model, sid, cancel=cancel)}"
            f"<details><summary>Atom table</summary>{_atom_table(result, model)}</details>"
            f"{''.join(assoc)}</section>")


def _sensitivity_html(sensitivity: dict | None) -> str:
    """What the design could find: the sentence and the detectable R² per network (HTML; empty
    when the run did not measure it)."""
    if not sensitivity or not sensitivity.get("text"):
        return ""
    import pandas as pd

    per = sensitivity.get("per_network") or {}
    table = pd.DataFrame({"network": list(per), "detectable R2 (median over atoms)":
                          [float("inf") if v is None else v for v in per.values()]})
    return (f"<h4>What the design could find</h4><p>{_esc(sensitivity['text'])}</p>"
            f"<details><summary>Per network</summary>{_table_html(table)}</details>")


def _comparison_table(name: str, table) -> str:
    """One ``comparison/*.tsv`` as the reader needs it: no empty rows, wide tables transposed."""
    table = table.drop(columns=[c for c in ("index", "Unnamed: 0") if c in table.columns])
    if name == "consistency" and "consistency" in table.columns:
        table = table[table["consistency"].notna()]
        if not len(table):
            return ("<p class='muted'>No network holds two associated atoms or more: no temporal consistency "
                    "to measure.</p>")
    if name == "coverage":
        counts = table.select_dtypes("number")
        table = table[(counts > 0).any(axis=1)] if counts.shape[1] else table
    if name == "baselines":
        return ""  # on the first screen
    if table.shape[1] > 8 and len(table) <= 6:  # one row per model: a column per model reads on a laptop
        first = table.columns[0]
        table = table.set_index(first).T.reset_index().rename(columns={"index": "measure"})
    return _table_html(table)


def comparison_section(result: ResultFolder) -> str:
    """The models side by side (the figure only with two models or more: one model has nothing to set beside)."""
    comp = result.comparison_tables()
    comp_html = "".join(f"<h3>{_esc(name)}</h3>{_comparison_table(name, t)}" for name, t in comp.items()
                        if name != "baselines")
    comp_fig = _img_file(result.figure("models_comparison"), "models side by side") if len(result.models) > 1 else ""
    if not (comp_html or comp_fig):
        return ""
    return f"<section id='comparison'><h2>Model comparison</h2>{comp_fig}{comp_html}</section>"


def warnings_section(result: ResultFolder) -> str:
    """Every warning the run raised, plain-words verdict warnings first (HTML)."""
    warns = sorted(result.run_warnings(), key=lambda w: w.get("category") != "VerdictWarning")
    if not warns:
        return ("<section id='warnings'><h2>Warnings raised during the run</h2>"
                "<p class='muted'>No warnings were raised during the run.</p></section>")
    items = "".join(
        f"<div class='warn'><b>{_esc(w.get('category', 'Warning'))}</b>: "
        f"{_esc(_relative(w.get('message', ''), result))}"
        f"{' <span class=muted>(' + _esc(w['source']) + ')</span>' if w.get('source') else ''}"
        f"{' <span class=muted>×' + str(int(w['count'])) + '</span>' if w.get('count', 1) > 1 else ''}</div>"
        for w in warns)
    return f"<section id='warnings'><h2>Warnings raised during the run</h2>{items}</section>"


def provenance_section(result: ResultFolder, version: str) -> str:
    """Versions, seed, inputs (relative to the folder or by file name), configuration, timings (HTML)."""
    import pandas as pd

    prov = result.provenance()
    versions = prov.get("versions", {})
    html = (_table_html(pd.DataFrame({"package": list(versions), "version": list(versions.values())}))
            if versions else "")
    html += (f"<p>Seed: {_esc(prov.get('seed', '?'))}. Report written by napari-brainorg {_esc(version)} from the "
             f"result folder <code>{_esc(Path(result.path).resolve().name)}</code> (a view of its files; nothing "
             f"was refitted; paths are relative to the folder, inputs outside it by file name).</p>")
    inputs = prov.get("inputs")
    if isinstance(inputs, dict) and inputs:
        table = pd.DataFrame({"input": [_relative(k, result) for k in inputs],
                              "identity": [str(v)[:23] + ("…" if len(str(v)) > 23 else "") for v in inputs.values()]})
        html += f"<details><summary>Inputs ({len(inputs)})</summary>{_table_html(table)}</details>"
    html += (f"<details><summary>Configuration (config.yaml)</summary>"
             f"<pre>{_esc(_relative(result.config_text(), result))}</pre></details>")
    timings = result.summary.get("timings_s")
    if isinstance(timings, dict) and timings:
        cpu = result.summary.get("cpu_s") if isinstance(result.summary.get("cpu_s"), dict) else {}
        html += (f"<details><summary>Step timings{' (wall; CPU of all threads)' if cpu else ''}</summary>"
                 f"{_kv_table((k, f'{num(v)} s' + (f' ({num(cpu[k])} s CPU)' if k in cpu else '')) for k, v in timings.items())}"
                 f"</details>")
    peaks = result.summary.get("peak_memory_gb")
    if isinstance(peaks, dict) and peaks:
        html += (f"<details><summary>Peak memory (the steps that raised it)</summary>"
                 f"{_kv_table((k, f'{num(v)} GB') for k, v in peaks.items())}</details>")
    return f"<section id='provenance'><h2>Provenance</h2>{html}</section>"
