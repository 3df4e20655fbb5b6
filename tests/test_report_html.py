"""`mtlsearch report --html`: the page of a tiny real study, opened in headless Chromium; and the
errors of bad paths and of a study with nothing to report."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.config import RunConfig
from mtlsearch.search._optuna_backend import run_search

from conftest import TINY_SPACE

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# --enable-unsafe-swiftshader: software WebGL for the parallel-coordinates plot (Chromium no longer falls back to it
# silently); --virtual-time-budget: run the page's timers until the plots are drawn
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
)
PLOTS = 7  # front, hypervolume, one bar chart per task metric (3), importances, parallel coordinates


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A 4-trial study of the tiny space on SQLite (enough complete trials for importances)."""
    folder = tmp_path_factory.mktemp("html")
    problem, _ = mtlsearch.load(copy.deepcopy(TINY_SPACE))
    run = RunConfig(study="tiny", storage=f"sqlite:///{folder}/s.db", n_trials=4, seed=0, device="cpu")
    run_search(problem, run)
    return run.storage, folder


@pytest.fixture(scope="module")
def page(tiny_study):
    storage, folder = tiny_study
    out = folder / "report.html"
    assert main(["report", "tiny", "--storage", storage, "--html", str(out)]) == 0
    return out


@pytest.mark.slow
def test_page_is_self_contained(page):
    text = page.read_text()
    assert set(re.findall(r"<script[^>]*>", text)) == {"<script>"} and "<link" not in text  # nothing fetched
    assert "plotly.js v" in text  # the bundle is inline
    for title in (
        "Pareto front",
        "Hypervolume after each finished trial",
        "Architectures on the front",
        "Parameter importances for Delta-MTL",
        "Parallel coordinates",
        "Baselines, data and seeds",
    ):
        assert title in text
    assert '<svg class="arch"' in text  # a diagram per front member


def run_browser(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser() or "chromium", *BROWSER_FLAGS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")},
    )


@pytest.mark.slow
@pytest.mark.process
def test_page_renders_in_headless_chromium(page, tmp_path):
    if browser() is None:
        pytest.skip("no headless Chromium on PATH (apt-get install chromium); the page is not opened")
    url = page.resolve().as_uri()
    dom = run_browser("--enable-logging=stderr", "--v=0", "--dump-dom", url)
    root = re.search(r"<html[^>]*>", dom.stdout)
    assert root, f"no page came back: {dom.stderr[-2000:]}"
    assert "data-errors" not in root.group(0), root.group(0)
    assert f'data-rendered="{PLOTS}"' in root.group(0), root.group(0)
    assert "Uncaught" not in dom.stderr, [line for line in dom.stderr.splitlines() if "Uncaught" in line]
    assert dom.stdout.count('class="main-svg"') >= PLOTS  # plotly drew its SVG layers
    assert dom.stdout.count('class="trace bars"') == 4  # per-task metrics (3) and importances
    assert 'class="parcoords"' in dom.stdout and dom.stdout.count('class="scatterlayer mlayer"') == 2

    shot = tmp_path / "report.png"
    result = run_browser(f"--screenshot={shot}", "--window-size=1300,2400", url)
    assert shot.is_file(), result.stderr[-2000:]
    assert distinct_colours(shot) > 64  # plots, not a blank page


def distinct_colours(png: Path) -> int:
    """How many distinct RGB colours the image has (decoded by torchvision)."""
    import torch
    from torchvision.io import ImageReadMode, decode_png, read_file

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs (for torchcodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_png(read_file(str(png)), ImageReadMode.RGB).to(torch.int64)
    assert image.shape[1] > 100 and image.shape[2] > 100
    packed = (image[0] << 16) | (image[1] << 8) | image[2]
    return int(torch.unique(packed).numel())


def test_html_into_a_missing_folder_or_a_folder_is_refused(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/e.db"
    optuna.create_study(study_name="e", storage=storage)
    missing = tmp_path / "nope" / "r.html"
    assert main(["report", "e", "--storage", storage, "--html", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--html: cannot write `{missing}`: its folder `{missing.parent}` does not exist" in err
    assert main(["report", "e", "--storage", storage, "--html", str(tmp_path)]) == 2
    assert f"`{tmp_path}` is a folder" in capsys.readouterr().err


def test_report_of_a_study_without_complete_trials_exits_2(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/e.db"
    optuna.create_study(study_name="e", storage=storage)
    assert main(["report", "e", "--storage", storage]) == 2
    assert "study `e` has no complete feasible trial yet: nothing to report" in capsys.readouterr().err


BLOCKS = ["block0", "block1", "block2"]
WEIGHTING = {"name": "equal", "weights": {"left": 1.0, "right": 1.0, "sum": 1.0}}


@pytest.mark.parametrize(
    "arch, shown",
    [
        (
            {"family": "tree", "paths": {"left": ["a", "a", "l"], "right": ["a", "a", "r"], "sum": ["s"] * 3}},
            ["shared ×2", "own", "head"],
        ),
        (
            {
                "family": "adashare",
                "paths": {"left": ["shared", None, "shared"], "right": ["shared"] * 3, "sum": ["shared"] * 3},
            },
            ["run", "skip", "one shared trunk"],
        ),
        (
            {
                "family": "routing",
                "paths": {"left": ["m0", "m1", "m1"], "right": ["m0", "m0", "m1"], "sum": ["m1"] * 3},
            },
            ["m0 ×2", "m1"],
        ),
        ({"family": "mmoe", "settings": {"experts": 3, "split": "block1"}}, ["bottom: block0", "expert 2", "sum head"]),
        (
            {"family": "ple", "settings": {"shared_experts": 2, "task_experts": 1, "split": "block0"}},
            ["no shared bottom", "shared 1", "right 0", "left head"],
        ),
    ],
)
def test_architecture_diagrams(arch, shown):
    from mtlsearch.search._html import diagram

    svg = diagram({**arch, "weighting": WEIGHTING}, BLOCKS)
    assert svg.startswith('<svg class="arch"') and svg.endswith("</svg>")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for label in shown:
        assert label in texts, (label, texts)
    assert diagram({"family": "cross_stitch", "settings": {}}, BLOCKS) == ""  # its description says it


# -- the Optuna ecosystem on a mtlsearch study ----------------------------------------------------


@pytest.mark.slow
def test_study_names_its_metrics_and_optuna_plots_it(tiny_study):
    storage, _ = tiny_study
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.metric_names == ["delta_mtl", "params"]
    figure = optuna.visualization.plot_pareto_front(study)
    assert figure.layout.xaxis.title.text == "delta_mtl" and figure.layout.yaxis.title.text == "params"
    assert sum(len(trace.x) for trace in figure.data) == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 30.0) -> Any:
    """GET ``url`` as JSON, retrying while the server starts (up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.process
def test_optuna_dashboard_finds_the_study_and_its_metric_names(tiny_study):
    storage, _ = tiny_study
    dashboard = Path(sys.executable).with_name("optuna-dashboard")  # the `dev` and `dashboard` extras install it
    assert dashboard.exists(), "optuna-dashboard is missing: pip install -e '.[dev]'"
    port = free_port()
    server = subprocess.Popen(
        [str(dashboard), storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        match = [s for s in studies if s["study_name"] == "tiny"]
        assert len(match) == 1, studies
        detail = get_json(f"{base}/api/studies/{match[0]['study_id']}")
        assert detail["objective_names"] == ["delta_mtl", "params"]
        assert len(detail["trials"]) == 4
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_report_json_carries_the_hypervolume(tiny_study, capsys):
    storage, _ = tiny_study
    assert main(["report", "tiny", "--storage", storage, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    volume = data["hypervolume"]
    assert volume["value"] > 0 and volume["reference"]["objectives"] == ["delta_mtl", "params"]
    assert [c["finished"] for c in volume["curve"]] == [1, 2, 3, 4]
    assert volume["curve"][-1]["hypervolume"] == pytest.approx(volume["value"])
    assert sum(r["hv_contribution"] for r in data["front"]) <= volume["value"] + 1e-12


def test_page_of_hostile_stored_values_still_renders(tiny_problem):
    """Stored attributes are untrusted: odd architectures and metrics give a page, not a traceback."""
    from mtlsearch.search._html import render
    from mtlsearch.search._records import write_study
    from mtlsearch.search._study import write_record

    study = tiny_problem.create_study()
    write_record(study, tiny_problem.space, 0, "tpe", None)
    write_study(study, signature=tiny_problem.signature(), baselines={"values": {"left": {"accuracy": "x"}}})
    odd = [
        {"family": "tree", "paths": {"left": [], "right": [1, {"x": 2}]}, "weighting": "x", "description": 5},
        {"family": ["mmoe"], "settings": {"experts": 10**9, "split": None}, "weighting": {"weights": 3}},
        {"family": "routing", "paths": {"left": ["m0"], "right": ["</script><script>alert(1)</script>"]}},
    ]
    for i, arch in enumerate(odd):
        attrs = {"delta_mtl": float(i), "params": 100 - i, "architecture": arch, "val_metrics": {"left": [1], "x": {}}}
        study.add_trial(optuna.trial.create_trial(values=[float(i), 100 - i], user_attrs=attrs))
    page = render(study)
    assert page.startswith("<!DOCTYPE html>") and "<script>alert(1)" not in page


def test_page_and_report_show_a_stored_affinity_record(tiny_problem):
    """A study with `mtlsearch affinity`'s record: one heatmap per method on the page, a line in the
    text report and the record in its JSON; a damaged record gives a note, not a traceback."""
    from mtlsearch.search._html import render
    from mtlsearch.search._records import write_study
    from mtlsearch.search._study import write_record
    from mtlsearch.search.results import format_report, report

    study = tiny_problem.create_study()
    write_record(study, tiny_problem.space, 0, "tpe", None)
    write_study(study, signature=tiny_problem.signature())
    metrics = {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.5}, "sum": {"mae": 1.0}}
    attrs = {
        "delta_mtl": 1.0,
        "params": 100,
        "macs": 100,
        "architecture": {"family": "hard_sharing"},
        "val_metrics": metrics,
    }
    study.add_trial(optuna.trial.create_trial(values=[1.0, 100], user_attrs=attrs))
    matrix = [[1.0, 0.2, -0.1], [0.2, 1.0, 0.3], [-0.1, 0.3, 1.0]]
    record = {
        "tasks": ["left", "right", "sum"],
        "methods": {"cosine": matrix, "lookahead": matrix},
        "convention": "row i, column j: the effect of task i on task j",
        "seed": 0,
        "epochs": 1,
        "steps": 4,
        "seconds": 1.5,
        "candidate_seconds": 3.0,
        "cost_ratio": 0.5,
    }
    write_study(study, affinity=record)
    page = render(study)
    assert (
        "<h2>Task affinity</h2>" in page
        and 'id="plot-affinity-cosine"' in page
        and 'id="plot-affinity-lookahead"' in page
    )
    payload = json.loads(re.search(r"const DATA = (.*?);</script>", page).group(1))
    heatmap = payload["figures"]["affinity-cosine"]
    assert heatmap["data"][0]["type"] == "heatmap" and heatmap["data"][0]["z"] == matrix
    assert heatmap["data"][0]["x"] == heatmap["data"][0]["y"] == ["left", "right", "sum"]
    assert heatmap["layout"]["title"]["text"] == "cosine: effect of row task on column task"
    # the scale: symmetric around 0, set by the largest off-diagonal magnitude (0.3); the diagonal 1.0 is clipped
    assert (heatmap["data"][0]["zmin"], heatmap["data"][0]["zmax"]) == (-0.3, 0.3)
    assert "Stored with the study: measured by <code>mtlsearch affinity</code> or a warm start" in page
    assert "diagonal clipped" in page and "Cost 1.50 s, 0.5x one candidate" in page
    data = report(study)
    assert data["affinity"] == record
    assert format_report(data).endswith("\naffinity: cosine, lookahead (stored with the study)")

    # lookahead: tiny off-diagonal values get the whole scale; cka: a similarity, not an effect
    lookahead = [[0.0027, 2e-5, -1e-5], [-3e-5, 0.0019, 1e-5], [2e-5, 0.0, 0.0031]]
    cka_only = {**record, "methods": {"lookahead": lookahead, "cka": matrix}, "epochs": 0, "steps": 0}
    write_study(study, affinity=cka_only)
    page = render(study)
    figures = json.loads(re.search(r"const DATA = (.*?);</script>", page).group(1))["figures"]
    trace = figures["affinity-lookahead"]["data"][0]
    assert (trace["zmin"], trace["zmax"]) == (-3e-5, 3e-5) and trace["z"][0][0] == 0.0027  # text shows 0.0027
    assert figures["affinity-cka"]["layout"]["title"]["text"] == (
        "cka: similarity of the tasks' single-task representations (CKA)"
    )
    assert "; no training: cka compares the study's single-task networks. Row i" in page

    write_study(study, affinity={**record, "methods": {"cosine": [[1.0]]}})
    page = render(study)
    assert "affinity-cosine" not in page and "the stored record is unreadable" in page
