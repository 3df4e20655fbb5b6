"""``mtlsearch report --html``: one self-contained HTML page of a study, readable offline.

The page inlines the plotly.js bundle of the ``plotly`` package (no CDN) and draws: the front
as a scatter on two objectives the reader picks, the hypervolume after each finished trial, each
front member's per-task metrics against the single-task baselines, an architecture diagram per
front member (plain SVG drawn here from the stored architecture), Optuna's parameter importances
for Delta-MTL, a parallel-coordinates view, and the baselines, data sizes and seeds.

When every plot has been drawn the page sets ``data-rendered`` on ``<html>`` to the number of
plots, and a script error or a ``console.error`` sets ``data-errors``: the browser test reads both.
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from ..affinity import AffinityResult, describe_stored, duration, ratio
from ..errors import ConfigError
from ..problem import method_label
from ..tasks import METRICS
from ._progress import Progress
from ._records import StudyRecord, study_record
from ._warm_start import describe as describe_warm_start
from .results import (
    Pooled,
    candidates,
    describe_baselines,
    feasible,
    is_number,
    pool_of,
    report,
    trial_record,
    write_atomic,
)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
BETTER = {"max": " (higher is better)", "min": " (lower is better)"}
MIN_IMPORTANCE_TRIALS = 4  # fANOVA on fewer complete trials says more about noise than parameters


def write_html(study: optuna.Study, path: str | Path, flag: str = "--html", progress: Progress | None = None) -> Path:
    """Write the study's report page to ``path`` (replacing a file there); a missing folder or an
    unwritable path is a :class:`~mtlsearch.errors.ConfigError` naming ``path``."""
    out = check_html_path(path, flag)
    page = render(study, progress)
    try:
        write_atomic(out, page.encode())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(out, 0o666 & ~umask)  # a page to share: the mode of a file written plainly, not the temp file's 0600
    except OSError as err:
        raise ConfigError(flag, f"cannot write `{path}`: {err.strerror or err}") from None
    return out


def check_html_path(path: str | Path, flag: str = "--html") -> Path:
    """``path`` as a file the page may be written to: not a folder, in a folder that exists."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(flag, f"`{path}` is a folder; give a file name, e.g. {out / 'report.html'}")
    if not out.parent.is_dir():
        raise ConfigError(flag, f"cannot write `{path}`: its folder `{out.parent}` does not exist")
    return out


def render(study: optuna.Study, progress: Progress | None = None) -> str:
    """The report page of ``study`` as one HTML string (``progress``: as for
    :func:`~mtlsearch.search.results.report`)."""
    from plotly.offline import get_plotlyjs

    data = report(study, progress)
    figures = {
        "hypervolume": hypervolume_figure(data),
        "importance": importance_figure(study, data),
        "parallel": parallel_figure(study, data),
        **metric_figures(data),
        **affinity_figures(data.get("affinity")),
    }
    scatter = scatter_data(study, data)
    warm = any(p["warm_start"] for p in scatter["points"])
    body = "\n".join(
        [
            header(data),
            section(
                "Pareto front",
                '<p class="note">Every complete, feasible candidate (grey) and the front (coloured by family); '
                "hover a point for its trial, family, method and per-task metrics"
                + ("; diamonds are warm-start trials (<code>run --warm-start affinity</code>)" if warm else "")
                + ". Choose the axes:</p>"
                '<p>x <select id="front-x"></select> y <select id="front-y"></select></p>'
                '<div id="plot-front" class="plot"></div>',
            ),
            section(
                "Hypervolume after each finished trial",
                '<div id="plot-hypervolume" class="plot"></div>' if figures["hypervolume"] else no_reference(),
            ),
            section(
                "Per-task metrics of the front vs the single-task baselines",
                '<div class="grid">'
                + "".join(f'<div id="plot-{html.escape(k)}" class="plot small"></div>' for k in figures if "." in k)
                + "</div>",
            ),
            section("Architectures on the front", architectures(study, data, progress)),
            section(
                "Parameter importances for Delta-MTL",
                '<div id="plot-importance" class="plot"></div>'
                if figures["importance"]
                else f'<p class="note">{html.escape(importance_note(study))}</p>',
            ),
            section("Parallel coordinates", '<div id="plot-parallel" class="plot"></div>'),
            affinity_section(data.get("affinity")),
            section("Baselines, data and seeds", facts(data, study_record(study))),
        ]
    )
    payload = {"figures": {k: v for k, v in figures.items() if v}, "scatter": scatter}
    return PAGE.format(
        title=html.escape(f"mtlsearch report: {data['study']}"),
        style=STYLE,
        body=body,
        plotly=get_plotlyjs(),
        payload=script_json(payload),
        script=SCRIPT,
        catch=CATCH,
    )


def write_compare_html(studies: Sequence[optuna.Study], data: Mapping[str, Any], path: str | Path) -> Path:
    """Write the page of ``mtlsearch compare --html``: the table, the hypervolume curves and the
    fronts of the studies on one plot each."""
    out = check_html_path(path)
    from plotly.offline import get_plotlyjs

    curves = [
        {
            "type": "scatter",
            "mode": "lines",
            "line": {"shape": "hv", "color": PALETTE[i % len(PALETTE)]},
            "name": row["study"],
            "x": [c["finished"] for c in row["curve"]],
            "y": [c["hypervolume"] for c in row["curve"]],
        }
        for i, row in enumerate(data["studies"])
    ]
    objectives = list(data.get("objectives") or [])
    fronts = []
    for i, study in enumerate(studies):
        points = candidates(study)
        if len(objectives) >= 2:
            fronts.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": study.study_name,
                    "marker": {"color": PALETTE[i % len(PALETTE)], "size": 10},
                    "x": [number(p.values[0]) for p in points],
                    "y": [number(p.values[1]) for p in points],
                    "text": [f"{study.study_name} #{p.trial.number}" for p in points],
                    "hovertemplate": "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
                }
            )
    figures: dict[str, Any] = {}
    if any(c["x"] for c in curves):
        figures["hypervolume"] = {
            "data": curves,
            "layout": layout(xaxis={"title": {"text": "finished trials"}}, yaxis={"title": {"text": "hypervolume"}}),
        }
    if fronts:
        figures["fronts"] = {
            "data": fronts,
            "layout": layout(
                xaxis={"title": {"text": axis_label(objectives[0])}},
                yaxis={"title": {"text": axis_label(objectives[1])}},
            ),
        }
    from ._compare import format_compare

    body = (
        f"<h1>Comparing {len(studies)} studies</h1>"
        + section("Table", f"<pre>{html.escape(format_compare(data))}</pre>")
        + "".join(
            section(title, f'<div id="plot-{key}" class="plot"></div>')
            for key, title in (("hypervolume", "Hypervolume after each finished trial"), ("fronts", "Fronts"))
            if key in figures
        )
    )
    page = PAGE.format(
        title=html.escape("mtlsearch compare: " + ", ".join(s.study_name for s in studies)),
        style=STYLE,
        body=body,
        plotly=get_plotlyjs(),
        payload=script_json({"figures": figures, "scatter": None}),
        script=SCRIPT,
        catch=CATCH,
    )
    try:
        write_atomic(out, page.encode())
    except OSError as err:
        raise ConfigError("--html", f"cannot write `{path}`: {err.strerror or err}") from None
    return out


# -- figures (plotly figure dicts) -------------------------------------------------------------------


def hypervolume_figure(data: Mapping[str, Any]) -> dict[str, Any] | None:
    volume = data.get("hypervolume")
    if not volume or not volume["curve"]:
        return None
    curve = volume["curve"]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "line": {"shape": "hv", "color": PALETTE[0]},
                "x": [c["finished"] for c in curve],
                "y": [c["hypervolume"] for c in curve],
                "text": [f"after trial #{c['trial']}" for c in curve],
                "hovertemplate": "%{text}<br>%{x} finished<br>hypervolume %{y:.4g}<extra></extra>",
            }
        ],
        "layout": layout(
            xaxis={"title": {"text": "finished trials"}, **({"dtick": 1} if len(curve) <= 20 else {})},
            yaxis={"title": {"text": "hypervolume"}},
            height=320,
        ),
    }


def metric_figures(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One bar chart per task metric: each front member's value, the baseline as a dashed line."""
    front = data["front"]
    baselines = (data.get("baselines") or {}).get("values") or {}
    out: dict[str, dict[str, Any]] = {}
    if not front:
        return out
    labels = [f"#{r['trial']}" for r in front]
    # every task metric some front member records (a candidate may leave an auxiliary task out)
    recorded = (r.get("val_metrics") for r in front)
    pairs = dict.fromkeys(
        (task, metric)
        for found in recorded
        if isinstance(found, Mapping)
        for task, metrics in found.items()
        if isinstance(metrics, Mapping)
        for metric in metrics
    )
    for task, metric in pairs:
        values = [number(metric_of(r, task, metric)) for r in front]
        base = number((baselines.get(task) or {}).get(metric) if isinstance(baselines, Mapping) else None)
        better = stored_direction(data, task, metric) or (METRICS.get(metric).direction if metric in METRICS else None)
        shapes = []
        if base is not None:
            shapes.append(
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": base,
                    "y1": base,
                    "line": {"dash": "dash", "color": "#444", "width": 2},
                }
            )
        colours = [family_colour(r.get("family"), data) for r in front]
        title = f"{task}.{metric}" + BETTER.get(better or "", "")
        out[f"{task}.{metric}"] = {
            "data": [
                {
                    "type": "bar",
                    "x": labels,
                    "y": values,
                    "marker": {"color": colours},
                    "name": "front",
                    "hovertemplate": "%{x}: %{y:.4g}<extra></extra>",
                },
            ],
            "layout": layout(
                title={
                    "text": title + ("; dashed: single-task baseline" if base is not None else ""),
                    "x": 0.02,
                    "font": {"size": 13},
                },
                shapes=shapes,
                showlegend=False,
                margin={"l": 50, "r": 10, "t": 36, "b": 30},
                xaxis={"type": "category"},
                yaxis={"title": {"text": metric}},
            ),
        }
    return out


def stored_direction(data: Mapping[str, Any], task: str, metric: str) -> str | None:
    """``max``/``min`` for ``task.metric`` as the study stored it (a user's own metric class
    included); ``None`` where the study has no such record."""
    found = data.get("metric_directions")
    per_task = found.get(task) if isinstance(found, Mapping) else None
    value = per_task.get(metric) if isinstance(per_task, Mapping) else None
    return value if value in BETTER else None


def affinity_figures(record: Any) -> dict[str, dict[str, Any]]:
    """One heatmap per task-affinity method of a stored affinity record (none when there is no
    record or it is damaged): tasks on both axes, row i, column j the effect of task i on task j
    (for ``cka``, their similarity). Each colour scale is symmetric around 0 and set by the largest
    off-diagonal magnitude, so the diagonal (a task on itself, often far larger) is clipped; its
    numbers are still written in the cells."""
    if record is None:
        return {}
    try:
        result = AffinityResult.from_record(record)
    except ConfigError:
        return {}
    out = {}
    for method, matrix in result.matrices.items():
        off = [abs(v) for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
        scale = max(off, default=0.0) or 1.0  # all off-diagonal values 0: any symmetric scale
        cka = method == "cka"
        out[f"affinity-{method}"] = {
            "data": [
                {
                    "type": "heatmap",
                    "z": matrix,
                    "x": result.tasks,
                    "y": result.tasks,
                    "colorscale": "RdBu",
                    "zmin": -scale,
                    "zmax": scale,
                    "texttemplate": "%{z:.2g}",
                    "hovertemplate": ("CKA of %{y} and %{x}" if cka else "effect of %{y} on %{x}")
                    + ": %{z:.4g}<extra></extra>",
                    "colorbar": {"thickness": 12},
                }
            ],
            "layout": layout(
                title={
                    "text": f"{method}: "
                    + (
                        "similarity of the tasks' single-task representations (CKA)"
                        if cka
                        else "effect of row task on column task"
                    ),
                    "x": 0.02,
                    "font": {"size": 13},
                },
                xaxis={"type": "category", "title": {"text": "task" if cka else "column: affected task"}},
                yaxis={
                    "type": "category",
                    "autorange": "reversed",
                    "title": {"text": "task" if cka else "row: acting task"},
                },
                margin={"l": 90, "r": 10, "t": 36, "b": 50},
                height=340,
            ),
        }
    return out


def affinity_section(record: Any) -> str:
    """The page's task-affinity section: empty without a stored record, a note for a damaged one."""
    if record is None:
        return ""
    figures = affinity_figures(record)
    if not figures:
        return section("Task affinity", f'<p class="note">{html.escape(describe_stored(record))}</p>')
    facts_ = AffinityResult.from_record(record)
    run = (
        "no training: cka compares the study's single-task networks"
        if facts_.epochs == 0
        else f"{facts_.epochs} epoch(s) ({facts_.steps} steps) of a hard-sharing network, seed {facts_.seed}"
    )
    note = (
        "Stored with the study: measured by <code>mtlsearch affinity</code> or a warm start "
        f"(<code>run --warm-start affinity</code>); {run}. Row i, column j: the effect of task i on task j "
        "(cka: their similarity). Each colour scale is symmetric around 0 and set by the largest off-diagonal "
        f"value; diagonal clipped. Cost {duration(facts_.seconds)}, {ratio(facts_.cost_ratio)}x one "
        "candidate's training."
    )
    return section(
        "Task affinity",
        f'<p class="note">{note}</p><div class="grid">'  # numbers of a checked record: nothing to escape
        + "".join(f'<div id="plot-{html.escape(k)}" class="plot small"></div>' for k in figures)
        + "</div>",
    )


def method_of(arch: Any) -> str:
    """The method of a stored architecture (untrusted): ``pcgrad``, ``pcgrad+great``, or ``?``."""
    return method_label(arch) if isinstance(arch, Mapping) else "?"


def metric_of(record: Mapping[str, Any], task: str, metric: str) -> Any:
    metrics = record.get("val_metrics")
    per_task = metrics.get(task) if isinstance(metrics, Mapping) else None
    return per_task.get(metric) if isinstance(per_task, Mapping) else None


def delta_target(data: Mapping[str, Any]) -> Any:
    """A function of a trial giving its Delta-MTL (an objective, else the stored attribute)."""
    objectives = list(data.get("objectives") or [])
    if "delta_mtl" in objectives:
        i = objectives.index("delta_mtl")
        return lambda t: t.values[i]
    return lambda t: float(t.user_attrs.get("delta_mtl", math.nan))


def usable_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if feasible(t)]


def importance_note(study: optuna.Study) -> str:
    n = len(usable_trials(study))
    return (
        f"{n} complete feasible trial(s): parameter importances need at least {MIN_IMPORTANCE_TRIALS} "
        "with a parameter that varies"
    )


def importance_figure(study: optuna.Study, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Optuna's fANOVA importances (Hutter et al., ICML 2014) of the parameters every complete
    trial has, for Delta-MTL; ``None`` with too few trials."""
    trials = usable_trials(study)
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return None
    target = delta_target(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0),
                target=target,
            )
    except (ValueError, RuntimeError):  # no parameter common to every trial, or none that varies
        return None
    if not importances:
        return None
    names = list(importances)[::-1]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [number(float(importances[n])) or 0.0 for n in names],
                "y": names,
                "marker": {"color": PALETTE[0]},
                "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
            }
        ],
        "layout": layout(
            xaxis={"title": {"text": "importance for Delta-MTL (fANOVA, sums to 1)"}},
            margin={"l": 160, "r": 20, "t": 20, "b": 50},
            height=max(220, 40 + 28 * len(names)),
        ),
    }


def parallel_figure(study: optuna.Study, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """A parallel-coordinates view of the complete trials: family, weighting, the parameters
    every trial has, and the objectives; lines coloured by Delta-MTL."""
    trials = usable_trials(study)
    if not trials:
        return None
    records = [trial_record(study, t) for t in trials]
    target = delta_target(data)
    deltas = [number(target(t)) for t in trials]
    dims: list[dict[str, Any]] = []
    for label, values in (
        ("family", [r["family"] or "?" for r in records]),
        ("weighting", [method_of(r["architecture"]) for r in records]),
    ):
        dims.append(categorical_dimension(label, values))
    common = set.intersection(*(set(t.params) for t in trials)) - {"family", "weighting"}
    for name in sorted(common):
        values = [t.params[name] for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dims.append({"label": name, "values": [number(v) for v in values]})
        else:
            dims.append(categorical_dimension(name, [str(v) for v in values]))
    for i, objective in enumerate(data.get("objectives") or []):
        dims.append({"label": objective, "values": [number(t.values[i]) for t in trials]})
    return {
        "data": [
            {
                "type": "parcoords",
                "line": {
                    "color": [d if d is not None else 0.0 for d in deltas],
                    "colorscale": "Viridis",
                    "showscale": True,
                    "colorbar": {"title": {"text": "Delta-MTL %"}},
                },
                "dimensions": dims,
            }
        ],
        "layout": layout(margin={"l": 70, "r": 70, "t": 50, "b": 30}),
    }


def categorical_dimension(label: str, values: Sequence[str]) -> dict[str, Any]:
    texts = [str(v) for v in values]
    levels = sorted(set(texts))
    return {
        "label": label,
        "values": [levels.index(v) for v in texts],
        "tickvals": list(range(len(levels))),
        "ticktext": levels,
    }


def scatter_data(study: optuna.Study, data: Mapping[str, Any]) -> dict[str, Any]:
    """What the front scatter needs: each candidate's fields (objectives, costs, per-task
    metrics), whether it is on the front, its family colour and its hover text."""
    front_trials = {r["trial"] for r in data["front"]}
    points = []
    fields: list[str] = list(data.get("objectives") or [])
    for p in pool_of(study):
        r = trial_record(study, p.trial, p)
        values: dict[str, float | None] = {k: number(v) for k, v in r["values"].items()}
        values.setdefault("delta_mtl", number(r["delta_mtl"]))
        for cost in ("params", "macs", "latency_ms"):
            values.setdefault(cost, number(r.get(cost)))
        for task, ms in (r["val_metrics"] or {}).items():
            for metric, v in ms.items() if isinstance(ms, Mapping) else ():
                values[f"{task}.{metric}"] = number(v)
        for k in values:
            if k not in fields:
                fields.append(k)
        points.append(
            {
                "trial": r["trial"],
                "family": str(r["family"] or "?"),
                "front": r["trial"] in front_trials,
                "warm_start": isinstance(r.get("warm_start"), str),
                "colour": family_colour(r["family"], data),
                "values": values,
                "hover": hover_text(r, p),
            }
        )
    objectives = list(data.get("objectives") or [])
    x = objectives[0] if objectives else (fields[0] if fields else "")
    y = objectives[1] if len(objectives) > 1 else (fields[1] if len(fields) > 1 else x)
    return {"fields": fields, "points": points, "x": x, "y": y, "labels": {f: axis_label(f) for f in fields}}


def hover_text(r: Mapping[str, Any], p: Pooled) -> str:
    arch = r["architecture"] or {}
    lines = [
        f"<b>trial #{r['trial']}</b>" + (f" (+{len(p.trials) - 1} more seeds)" if len(p.trials) > 1 else ""),
        f"family: {html.escape(str(r['family']))}",
        f"method: {html.escape(method_of(arch))}",
        f"Delta-MTL: {r['delta_mtl']:+.2f} %" if is_number(r["delta_mtl"]) else "Delta-MTL: ?",
    ]
    if isinstance(r.get("warm_start"), str):
        lines.append(f"warm start: {html.escape(r['warm_start'])}")
    for task, ms in (r["val_metrics"] or {}).items():
        for metric, v in ms.items() if isinstance(ms, Mapping) else ():
            lines.append(f"{html.escape(str(task))}.{html.escape(str(metric))}: {v:.4g}" if is_number(v) else "")
    if is_number(r.get("params")):
        lines.append(f"params: {r['params']:,}")
    return "<br>".join(line for line in lines if line)


def axis_label(field: str) -> str:
    return {"delta_mtl": "Delta-MTL %", "params": "parameters", "macs": "MACs", "latency_ms": "latency ms"}.get(
        field, field
    )


def family_colour(family: Any, data: Mapping[str, Any]) -> str:
    names = sorted({str(r.get("family")) for r in data["front"]} | {str(family)})
    return PALETTE[names.index(str(family)) % len(PALETTE)] if family else "#999"


def layout(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fafafa",
        "font": {"family": "sans-serif", "size": 12},
    }
    base.update(kw)
    return base


def number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


# -- architecture diagrams (SVG) --------------------------------------------------------------------

ROW, COL, GAP, LEFT = 24, 96, 16, 80


def architectures(study: optuna.Study, data: Mapping[str, Any], progress: Progress | None = None) -> str:
    blocks = block_names(study, progress)
    cards = []
    for r in data["front"]:
        arch = r["architecture"] or {}
        title = (
            f"#{r['trial']} {r['family'] or '?'} / {method_of(arch)}"
            + (f": Delta-MTL {r['delta_mtl']:+.2f} %" if is_number(r["delta_mtl"]) else "")
            + (f", {r['params']:,} params" if is_number(r.get("params")) else "")
        )
        lines = arch.get("description")
        description = "\n".join(str(line) for line in lines) if isinstance(lines, list) else ""
        cards.append(
            f'<div class="card"><h3>{html.escape(title)}</h3>{diagram(arch, blocks)}'
            f"<pre>{html.escape(description)}</pre></div>"
        )
    return "".join(cards) or '<p class="note">no front yet</p>'


def block_names(study: optuna.Study, progress: Progress | None = None) -> list[str] | None:
    try:
        from ._study import stored_problem

        return list(stored_problem(study, progress).backbone.block_names)
    except Exception:  # noqa: BLE001 - a diagram falls back to numbered blocks
        return None


def diagram(arch: Mapping[str, Any], blocks: Sequence[str] | None) -> str:
    """An SVG of one architecture: the sharing tree per block, the run/skip grid of a gating
    family, routes of routing, experts and gates of MMoE and PLE; else nothing (the description
    below it says what it is)."""
    family = arch.get("family")
    settings = arch.get("settings") or {}
    paths = arch.get("paths")
    if family in ("mmoe", "ple") and isinstance(settings, Mapping):
        tasks = task_names(arch)
        if tasks:
            return experts_svg(family, settings, tasks, blocks)
    if (
        isinstance(paths, Mapping)
        and paths
        and all(isinstance(p, list) and p for p in paths.values())
        and len({len(p) for p in paths.values()}) == 1
    ):
        n = len(next(iter(paths.values())))
        names = list(blocks) if blocks and len(blocks) == n else [f"block{i}" for i in range(n)]
        if any(k is None for p in paths.values() for k in p):
            return gating_svg(paths, names)
        return paths_svg(paths, names, routes=family == "routing")
    return ""


def task_names(arch: Mapping[str, Any]) -> list[str]:
    weighting = arch.get("weighting")
    weights = weighting.get("weights") if isinstance(weighting, Mapping) else None
    if isinstance(weights, Mapping):
        return [str(t) for t in weights]
    return []


def svg(width: int, height: int, parts: Sequence[str]) -> str:
    return (
        f'<svg class="arch" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(parts) + "</svg>"
    )


def text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11, fill: str = "#222") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
        f'dominant-baseline="middle">{html.escape(s)}</text>'
    )


def rect(x: float, y: float, w: float, h: float, fill: str, stroke: str = "#333", dash: bool = False) -> str:
    style = ' stroke-dasharray="4 3"' if dash else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" fill="{fill}" '
        f'stroke="{stroke}"{style}/>'
    )


def line(x1: float, y1: float, x2: float, y2: float, colour: str = "#888") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="1.2"/>'


def paths_svg(paths: Mapping[str, list], blocks: Sequence[str], routes: bool) -> str:
    """Blocks left to right, tasks top to bottom (ordered by path, so that every group of tasks
    sharing a block's computation is a contiguous run of rows); one box per group and block."""
    tasks = sorted(paths, key=lambda t: [str(k) for k in paths[t]])
    top = 22
    width = LEFT + len(blocks) * (COL + GAP) + 70
    height = top + len(tasks) * ROW + 8
    parts = [text(LEFT + b * (COL + GAP) + COL / 2, 10, name, size=10, fill="#555") for b, name in enumerate(blocks)]
    for i, t in enumerate(tasks):
        parts.append(text(LEFT - 8, top + i * ROW + ROW / 2, t, anchor="end"))
    for b in range(len(blocks)):
        x = LEFT + b * (COL + GAP)
        i = 0
        while i < len(tasks):
            prefix = paths[tasks[i]][: b + 1]
            j = i
            while j + 1 < len(tasks) and paths[tasks[j + 1]][: b + 1] == prefix:
                j += 1
            shared = j > i
            label = str(prefix[-1]) if routes else ("shared" if shared else "own")
            fill = "#cfe3f7" if shared else "#f3f3f3"
            parts.append(rect(x, top + i * ROW + 2, COL, (j - i + 1) * ROW - 4, fill))
            parts.append(text(x + COL / 2, top + (i + j + 1) * ROW / 2, label + (f" ×{j - i + 1}" if shared else "")))
            if b > 0:
                for k in range(i, j + 1):
                    y = top + k * ROW + ROW / 2
                    parts.append(line(x - GAP, y, x, y))
            i = j + 1
    hx = LEFT + len(blocks) * (COL + GAP)
    for i, t in enumerate(tasks):
        y = top + i * ROW + ROW / 2
        parts.append(line(hx - GAP, y, hx, y))
        parts.append(rect(hx, top + i * ROW + 3, 56, ROW - 6, "#fde9c9"))
        parts.append(text(hx + 28, y, "head", size=10))
    return svg(width, height, parts)


def gating_svg(paths: Mapping[str, list], blocks: Sequence[str]) -> str:
    """A run/skip grid: one row per task, one cell per block, filled where the task runs it."""
    tasks = list(paths)
    top, cell = 22, 60
    width = LEFT + len(blocks) * (cell + 6) + 120
    height = top + len(tasks) * ROW + 8
    parts = [text(LEFT + b * (cell + 6) + cell / 2, 10, name, size=10, fill="#555") for b, name in enumerate(blocks)]
    for i, t in enumerate(tasks):
        y = top + i * ROW
        parts.append(text(LEFT - 8, y + ROW / 2, t, anchor="end"))
        for b, key in enumerate(paths[t]):
            x = LEFT + b * (cell + 6)
            run = key is not None
            parts.append(rect(x, y + 3, cell, ROW - 6, "#4c9be8" if run else "#fff", dash=not run))
            parts.append(text(x + cell / 2, y + ROW / 2, "run" if run else "skip", fill="#fff" if run else "#888"))
    legend_x = LEFT + len(blocks) * (cell + 6) + 10
    parts.append(text(legend_x, top + ROW / 2, "one shared trunk", anchor="start", size=10, fill="#555"))
    return svg(width, height, parts)


def experts_svg(family: str, settings: Mapping[str, Any], tasks: Sequence[str], blocks: Sequence[str] | None) -> str:
    """Shared bottom, experts, one gate per task, heads (MMoE: K shared experts; PLE: shared
    experts plus each task's own, each task's gate mixing the shared ones and its own)."""
    split = str(settings.get("split", "?"))
    if family == "mmoe":
        experts = [("shared", f"expert {k}") for k in range(int_or(settings.get("experts"), 1))]
    else:
        experts = [("shared", f"shared {k}") for k in range(int_or(settings.get("shared_experts"), 1))]
        for t in tasks:
            experts += [(t, f"{t} {k}") for k in range(int_or(settings.get("task_experts"), 1))]
    bottom = "shared bottom"
    if blocks and split in blocks:
        i = list(blocks).index(split)
        bottom = "no shared bottom" if i == 0 else f"bottom: {blocks[0]}" + (f"..{blocks[i - 1]}" if i > 1 else "")
    rows = max(len(experts), len(tasks))
    top = 10
    height = top + rows * ROW + 10
    width = 560
    mid = top + rows * ROW / 2
    parts = [rect(10, mid - 18, 120, 36, "#cfe3f7"), text(70, mid, bottom, size=10)]
    ex, gx, hx = 170, 330, 440
    expert_y = [top + (rows - len(experts)) * ROW / 2 + k * ROW + ROW / 2 for k in range(len(experts))]
    gate_y = [top + (rows - len(tasks)) * ROW / 2 + k * ROW + ROW / 2 for k in range(len(tasks))]
    for owner, label in experts:
        y = expert_y[experts.index((owner, label))]
        parts.append(line(130, mid, ex, y))
        colour = "#e8f4e0" if owner == "shared" else "#fde9c9"
        parts.append(rect(ex, y - ROW / 2 + 3, 110, ROW - 6, colour))
        parts.append(text(ex + 55, y, label, size=10))
    for k, t in enumerate(tasks):
        y = gate_y[k]
        for (owner, _), ey in zip(experts, expert_y):
            if owner in ("shared", t):
                parts.append(line(ex + 110, ey, gx - 10, y, "#bbb"))
        parts.append(f'<circle cx="{gx:.1f}" cy="{y:.1f}" r="10" fill="#fff" stroke="#333"/>')
        parts.append(text(gx, y, "g", size=10))
        parts.append(line(gx + 10, y, hx, y))
        parts.append(rect(hx, y - ROW / 2 + 3, 100, ROW - 6, "#f3f3f3"))
        parts.append(text(hx + 50, y, f"{t} head", size=10))
    parts.append(text(ex + 55, height - 4, f"experts from {split}", size=9, fill="#777"))
    return svg(width, height + 6, parts)


def int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 64 else default


# -- text sections ---------------------------------------------------------------------------------


def header(data: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in data["trials"].items() if v) or "no trials"
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(data.get("objectives") or [], data["directions"]))
    volume = data.get("hypervolume")
    hv = f"hypervolume of the front: <b>{volume['value']:.4g}</b>" if volume else "hypervolume: no reference point yet"
    warnings_ = "".join(f'<p class="warn">warning: {html.escape(w)}</p>' for w in data.get("warnings") or [])
    return (
        f"<h1>Study <code>{html.escape(str(data['study']))}</code></h1>"
        f"<p>{html.escape(counts)}; objectives {html.escape(objectives)}; {hv}; "
        f"{len(data['front'])} candidate(s) on the front.</p>{warnings_}"
    )


def no_reference() -> str:
    return '<p class="note">no reference point yet: the study has no stored baselines</p>'


def facts(data: Mapping[str, Any], stored_study: StudyRecord) -> str:
    rows = [
        ("run", f"seed {stored_study.seed}, sampler {stored_study.sampler}, budget {stored_study.n_trials} trials"),
    ]
    baselines = data.get("baselines") or {}
    if baselines:
        rows.append(("baselines", describe_baselines(baselines)))
        rows.append(("baseline kind", str(baselines.get("source", "?"))))
    stored = data.get("data") or {}
    if isinstance(stored, Mapping):
        for key in ("benchmark", "seed", "sizes", "pool_sizes", "input_shape"):
            if key in stored:
                rows.append((f"data {key}", json.dumps(stored[key])))
    volume = data.get("hypervolume")
    if volume:
        ref = volume["reference"]
        rows.append(
            (
                "hypervolume reference",
                ", ".join(
                    f"{o}: point {p:.4g}, scale {s:.4g}"
                    for o, p, s in zip(ref["objectives"], ref["point"], ref["scale"])
                )
                + f" ({ref.get('rule', '')})",
            )
        )
    if data.get("warm_start"):
        rows.append(("warm start", describe_warm_start(data["warm_start"])))
    seeds = sorted({r["seed"] for r in data["front"] if isinstance(r.get("seed"), int)})
    if seeds:
        rows.append(("seeds of the front's trials", ", ".join(map(str, seeds))))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def section(title: str, content: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{content}</section>"


def script_json(value: Any) -> str:
    """``value`` as a JavaScript literal that is safe inside ``<script>`` (no ``</``)."""
    return json.dumps(value, allow_nan=False, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 14px; margin: 4px 0 8px; }
.plot { width: 100%; height: 420px; } .plot.small { height: 260px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 10px 0; overflow-x: auto; }
pre { background: #f6f6f6; padding: 6px; font-size: 12px; margin: 6px 0 0; white-space: pre-wrap; }
.note { color: #666; font-size: 13px; } .warn { color: #a35a00; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th { text-align: left; padding: 4px 12px 4px 0; vertical-align: top; }
td { padding: 4px 0; } select { font-size: 13px; }
"""

SCRIPT = """
(function () {
  const root = document.documentElement, fail = window.mtlsearchFail;
  const config = {displaylogo: false, responsive: true};
  const S = DATA.scatter || {fields: [], points: [], labels: {}};
  function frontFigure(x, y) {
    const traces = [];
    const others = S.points.filter(p => !p.front);
    traces.push({type: "scatter", mode: "markers", name: "other candidates",
      x: others.map(p => p.values[x]), y: others.map(p => p.values[y]), text: others.map(p => p.hover),
      hovertemplate: "%{text}<extra></extra>",
      marker: {color: "#bbb", size: 8, symbol: others.map(p => p.warm_start ? "diamond" : "circle")}});
    const families = [...new Set(S.points.filter(p => p.front).map(p => p.family))];
    for (const f of families) {
      const ps = S.points.filter(p => p.front && p.family === f);
      traces.push({type: "scatter", mode: "markers+text", name: "front: " + f,
        x: ps.map(p => p.values[x]), y: ps.map(p => p.values[y]), text: ps.map(p => p.hover),
        texttemplate: ps.map(p => "#" + p.trial), textposition: "top center",
        hovertemplate: "%{text}<extra></extra>",
        marker: {color: ps[0].colour, size: 12, line: {color: "#222", width: 1},
          symbol: ps.map(p => p.warm_start ? "diamond" : "circle")}});
    }
    return {data: traces, layout: {margin: {l: 70, r: 20, t: 20, b: 50}, plot_bgcolor: "#fafafa",
      xaxis: {title: {text: S.labels[x] || x}}, yaxis: {title: {text: S.labels[y] || y}}, hovermode: "closest"}};
  }
  const jobs = [];
  const sx = document.getElementById("front-x"), sy = document.getElementById("front-y");
  if (sx && sy) {
  for (const f of S.fields) {
    for (const sel of [sx, sy]) {
      const o = document.createElement("option");
      o.value = f; o.textContent = S.labels[f] || f; sel.appendChild(o);
    }
  }
  sx.value = S.x; sy.value = S.y;
  function drawFront() {
    const fig = frontFigure(sx.value, sy.value);
    return Plotly.react("plot-front", fig.data, fig.layout, config);
  }
  sx.addEventListener("change", drawFront); sy.addEventListener("change", drawFront);
  jobs.push(drawFront());
  }
  for (const [name, fig] of Object.entries(DATA.figures)) {
    const el = document.getElementById("plot-" + name);
    if (el) {
      if (fig.layout.height) { el.style.height = fig.layout.height + "px"; }
      jobs.push(Plotly.newPlot(el, fig.data, fig.layout, Object.assign({}, config, {displayModeBar: false})));
    }
  }
  Promise.all(jobs).then(function () {
    root.dataset.rendered = String(document.querySelectorAll(".js-plotly-plot").length);
  }).catch(function (e) { fail(String(e)); });
})();
"""

CATCH = """
(function () {
  const root = document.documentElement;
  function fail(message) { root.dataset.errors = (root.dataset.errors || "") + message + "\\n"; }
  window.mtlsearchFail = fail;
  window.addEventListener("error", function (e) { fail(String(e.message)); });
  const original = console.error;
  console.error = function (...args) { fail(args.map(String).join(" ")); original.apply(console, args); };
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style>
<script>{catch}</script>
<script>{plotly}</script>
</head><body>
{body}
<script>const DATA = {payload};</script>
<script>{script}</script>
</body></html>
"""
