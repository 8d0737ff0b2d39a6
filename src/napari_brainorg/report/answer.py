"""The report's first screen: the answer of the run, per model, before any method or figure.

Per model: the held-out r with its 95% CI over subjects, its chance level, the noise
ceiling, the verdict against each baseline and the plain-words warnings (the summary's
``verdict`` and the run's ``VerdictWarning``), then the declared network links (their
count and the strongest few). Everything comes from ``summary.json``, ``warnings.json``
and the association tables; a reader who stops here knows the result.
"""

from __future__ import annotations

from ..io.results import ResultFolder
from ._html import _esc, ci_text, fixed, num, p_text
from .atoms import declared_links

#: the strongest declared links listed on the first screen, per model
N_LINKS = 5

_BASELINE_WORDS = {"nuisance": "nuisance regressors", "phase_randomised": "phase-randomised atoms",
                   "untrained": "untrained twin"}


def _tile(label: str, value: str, detail: str = "", cls: str = "") -> str:
    return (f"<div class='tile {cls}'><div class='label'>{label}</div><div class='value'>{value}</div>"
            f"<div class='detail'>{detail}</div></div>")


def _score_tiles(info: dict, unit: str) -> str:
    """The held-out r with its CI, its chance level and the noise ceiling, as tiles (HTML)."""
    tiles = []
    rs = info.get("r_cv_subjects")
    if rs:
        tiles.append(_tile("held-out r", fixed(rs["mean"]),
                           f"{ci_text(rs.get('ci95')).strip() or 'one subject: no CI'}<br>mean over "
                           f"{int(rs['n_subjects'])} subjects of each one&rsquo;s median over {unit}",
                           "main"))
    elif info.get("r2_median") is not None:
        tiles.append(_tile(f"held-out {_esc(info.get('r2_kind', 'R²'))}", fixed(info["r2_median"]),
                           f"median over {unit} (no held-out r in this run)", "main"))
    chance = info.get("r_cv_chance")
    if chance:
        above = chance.get("above_chance", {})
        detail = ("held-out r of circularly shifted features, the nested CV run again"
                  + (f"<br>above chance {fixed(above['mean'], 3, True)}{ci_text(above.get('ci95'), 3, True)}, "
                     f"p {p_text(above.get('p'))}" if above else ""))
        tiles.append(_tile("chance", fixed(chance["chance"]), detail))
    nc = info.get("noise_ceiling")
    if nc and nc.get("median") is not None:
        tiles.append(_tile("noise ceiling", fixed(nc["median"]),
                           f"r a perfect model of the response shared by the subjects would reach; median over "
                           f"{unit}"))
    r2 = info.get("r2_sparse")
    if isinstance(r2, dict) and r2.get("null_median") is not None:
        tiles.append(_tile("paper&rsquo;s in-sample R²", fixed(r2["median"]),
                           f"{fixed(r2['null_median'])} by chance (shifted atoms, sparse fit refitted); "
                           f"median over {unit}"))
    return f"<div class='tiles'>{''.join(tiles)}</div>" if tiles else ""


def _verdict_list(findings: list[dict], extra_warnings: list[str]) -> str:
    """The findings as a list, warnings styled as such (HTML)."""
    items = []
    for f in findings:
        warn = f.get("severity") == "warning"
        items.append(f"<li class='{'finding-warn' if warn else 'finding'}'>"
                     f"<span class='mark'>{'&#9888;' if warn else '&#10003;'}</span> {_esc(f.get('text', ''))}</li>")
    items += [f"<li class='finding-warn'><span class='mark'>&#9888;</span> {_esc(t)}</li>" for t in extra_warnings]
    return f"<ul class='verdict'>{''.join(items)}</ul>" if items else ""


def _measure_words(metric: str) -> str:
    """A comparison's measure in words (each a subject's median over voxels, then the subjects' mean)."""
    text = str(metric).removeprefix("median ")
    return _esc(text.replace("r_cv", "held-out r").replace("r2_sparse", "in-sample R²"))


def _baseline_cell(r: dict) -> str:
    kind = _BASELINE_WORDS.get(r.get("baseline_kind"), "")
    return f"<b>{_esc(r.get('baseline', ''))}</b>{' <span class=muted>(' + kind + ')</span>' if kind else ''}"


def _difference_cell(r: dict) -> str:
    lead = (r.get("p") if r.get("p") is not None else 1.0) < 0.05 and (r.get("difference") or 0.0) > 0
    return (f"<td class='n nw {'lead' if lead else 'nolead'}'>{fixed(r.get('difference'), 3, True)}"
            f"{ci_text([r.get('ci_low'), r.get('ci_high')], 3, True)}</td><td class='n nw'>p {p_text(r.get('p'))}</td>")


def _baselines_table(rows: list[dict], model: str) -> str:
    """The model against each baseline on the verdict's measure (held-out r above each one's chance
    level when measured), narrow enough for the first screen."""
    mine = [r for r in rows if r.get("model") == model]
    pairs = list(dict.fromkeys(r.get("baseline") for r in mine))
    body = []
    for baseline in pairs:
        theirs = [r for r in mine if r.get("baseline") == baseline]
        r = next((x for x in theirs if x.get("chance_corrected")), None) or theirs[0]
        body.append(f"<tr><td>{_baseline_cell(r)}</td><td>{_measure_words(r.get('metric', ''))}</td>"
                    f"{_difference_cell(r)}</tr>")
    if not body:
        return ""
    return ("<h4>Against the baselines</h4><table class='fit baselines'><thead><tr><th>baseline</th><th>measure</th>"
            "<th>model &minus; baseline</th><th>one-sided</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _all_measures_table(rows: list[dict], model: str) -> str:
    """Every measure against every baseline, values side by side (folded under the first screen)."""
    mine = [r for r in rows if r.get("model") == model]
    if not mine:
        return ""
    body = "".join(
        f"<tr><td>{_baseline_cell(r)}</td><td>{_measure_words(r.get('metric', ''))}</td>"
        f"<td class='n'>{fixed(r.get('model_value'))}</td><td class='n'>{fixed(r.get('baseline_value'))}</td>"
        f"{_difference_cell(r)}<td class='n'>{num(r.get('n_subjects'))}</td><td class='n'>"
        f"{num(r.get('model_associations'))} / {num(r.get('baseline_associations'))}</td></tr>" for r in mine)
    return ("<details><summary>Every measure against every baseline</summary><table class='fit baselines'><thead>"
            "<tr><th>baseline</th><th>measure (each subject&rsquo;s median over voxels)</th><th>model</th>"
            "<th>baseline</th><th>model &minus; baseline</th><th>one-sided sign-flip</th><th>subjects</th>"
            "<th>network links model / baseline</th></tr>"
            f"</thead><tbody>{body}</tbody></table></details>")


def _links_table(result: ResultFolder, model: str, info: dict) -> str:
    """The declared network links: their count and the strongest :data:`N_LINKS` (HTML)."""
    links = declared_links(result, model)
    counts = info.get("n_associations") or {}
    n = int(sum(counts.values())) if counts else (0 if links is None else len(links))
    head = (f"<p class='linkcount'><b>{n} declared network link{'s' if n != 1 else ''}</b>"
            + (f" ({', '.join(f'{int(v)} {_esc(k)}' for k, v in counts.items())})" if counts else "") + "</p>")
    if links is None or not len(links):
        return head
    key = "statistic" if "statistic" in links.columns else next(
        (c for c in ("overlap_rate", "dice", "correlation") if c in links.columns), None)
    if key is not None:
        links = links.reindex(links[key].abs().sort_values(ascending=False, kind="stable").index)
    rows = []
    for _, r in links.head(N_LINKS).iterrows():
        # with a network readout a link is shown with its network's direction and its role in the
        # network's driver (a counterweight of an activating driver is no deactivation)
        shown, role = r.get("network_direction"), r.get("role")
        direction = shown if isinstance(shown, str) and shown else r.get("direction", r.get("part", ""))
        if isinstance(role, str) and role and role != "main driver":
            direction = f"{direction} ({role})"
        rows.append(f"<tr><td class='n'>{int(r['atom'])}</td><td>{_esc(r.get('atlas', ''))}: "
                    f"{_esc(r.get('network', ''))}</td><td>{_esc(direction)}</td>"
                    f"<td class='n'>{fixed(r[key], 2) if key else ''}</td>"
                    f"<td class='n'>{p_text(r['q']).lstrip('= ') if 'q' in r else ''}</td></tr>")
    more = (f"<p class='muted'>The strongest {min(N_LINKS, len(links))} of {len(links)}; all in the model&rsquo;s "
            f"section.</p>")
    return (head + f"<table class='fit links'><thead><tr><th>atom</th><th>network</th><th>direction</th>"
            f"<th>{_esc(key or '')}</th><th>q</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (more if len(links) > N_LINKS else ""))


def _recovery_line(result: ResultFolder) -> str:
    rec = result.recovery()
    if not rec or "tp" not in rec:
        return ""
    return (f"<p class='recovery'><b>Validation on the simulation&rsquo;s ground truth:</b> {int(rec['tp'])} planted "
            f"link{'s' if rec['tp'] != 1 else ''} found, {int(rec.get('fn', 0))} missed, {int(rec.get('fp', 0))} "
            f"false positive{'s' if rec.get('fp', 0) != 1 else ''} (precision {fixed(rec.get('precision'), 2)}, "
            f"recall {fixed(rec.get('recall'), 2)}).</p>")


def answer_section(result: ResultFolder) -> str:
    """The first screen: per model the scores beside chance and ceiling, the verdict, the links.

    Parameters
    ----------
    result : ResultFolder

    Returns
    -------
    str
        HTML ``<section id="answer">``.
    """
    s = result.summary
    unit = "regions" if result.is_region_result else "voxels"
    findings = s.get("verdict") or []
    said = {f.get("text") for f in findings}
    warned = [w.get("message", "") for w in result.run_warnings()
              if w.get("category") == "VerdictWarning" and w.get("message") not in said]
    cards = []
    several = len(result.models) > 1
    for model in result.models:
        info = s.get("results", {}).get(model, {})
        own = [f for f in findings if f.get("model") == model]
        extra = [m for m in warned if model in m] if several else warned
        rows = s.get("baseline_comparison") or []
        cards.append(
            f"<div class='card'><h2>The answer{' for ' + _esc(model) if model else ''}</h2>"
            f"{_score_tiles(info, unit)}<div class='answer-grid'><div>{_verdict_list(own, extra)}"
            f"{_baselines_table(rows, model)}</div><div>{_links_table(result, model, info)}</div></div>"
            f"{_all_measures_table(rows, model)}</div>")
    if several:  # plain-words warnings that name no model belong to the whole run
        cards.append(_verdict_list([], [m for m in warned if not any(model in m for model in result.models)]))
    others = [w for w in result.run_warnings() if w.get("category") != "VerdictWarning"]
    note = (f"<p class='muted'>{len(others)} other warning{'s' if len(others) != 1 else ''} of the run "
            f"(data, convergence, resampling): <a href='#warnings'>Warnings</a>.</p>" if others else "")
    return f"<section id='answer'>{''.join(cards)}{_recovery_line(result)}{note}</section>"
