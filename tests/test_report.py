"""The HTML report, on real BM25 runs of two small SciFact slices (three conditions each).

Always (no browser needed): the page parsed with lxml, its numbers checked against ir-measures, scipy and
statsmodels computed here from the run files, against `table --format md`, the sidecars' provenance and the
reproducing commands (parsed with the CLI's own parser); nothing in it points outside the file.

Where Chromium and Playwright are installed (Debian's `chromium`, `pip install playwright`; no browser
download): the page opened headless, with no console error, the numbers it shows equal to `table`'s, a cell
expanded, a column sorted; and the demo's report, when `dupmae-eval demo` has written its runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, scifact_slice
from dupmae_eval.cli import build_parser, main

pytestmark = pytest.mark.java

MEASURES = ["nDCG@10", "R@100", "R@1000"]
CONDITIONS = {   # in the suite's order, which is not alphabetical
    "bm25-tuned": ["--fields", "flat", "--k1", "1.2", "--b", "0.75"],
    "bm25-flat": ["--fields", "flat"],
    "bm25-b0.9": ["--fields", "flat", "--b", "0.9"],
}
"""All flat: one index per dataset, searched three ways (a multifield index would double the indexing time)."""
BASELINE = "bm25-flat"
ONE_DATASET = "bm25-b0.9"        # run on the first slice only: its cell on the other is empty


@pytest.fixture(scope="module")
def report_runs(small_scifact, tmp_path_factory):
    """Runs of every condition on two datasets (`bm25` with sidecars), a suite naming them, and the report."""
    second = scifact_slice(tmp_path_factory.mktemp("scifact-later"), first=40, count=30, documents=300)
    datasets = [second, small_scifact]          # the suite lists the later slice first
    runs = tmp_path_factory.mktemp("report-runs")
    made = {}
    for dataset in datasets:
        for condition, flags in CONDITIONS.items():
            if condition == ONE_DATASET and dataset != small_scifact:
                continue
            output = runs / condition / f"{dataset.name}.trec"
            assert main(["bm25", "--dataset", str(dataset), *flags, "--hits", "100", "--tag", condition,
                         "--output", str(output)]) == 0
            made[(dataset.name, condition)] = (output, flags)
    suite = runs / "suite.yaml"
    suite.write_text(
        "suite: slices\nmeasures: [" + ", ".join(MEASURES) + "]\n"
        f"datasets: [{datasets[0].name}, {datasets[1].name}]\nconditions:\n"
        "  bm25-tuned: {kind: bm25, fields: flat, k1: 1.2, b: 0.75, description: BM25 with Lucene's defaults}\n"
        "  bm25-flat: {kind: bm25, fields: flat, description: Pyserini's BEIR BM25}\n"
        "  bm25-b0.9: {kind: bm25, fields: flat, b: 0.9}\n"
        "references:\n"
        f"  Paper: {{measure: nDCG@10, source: a table in a paper, values: {{{small_scifact.name}: 0.5}}}}\n")
    report = runs / "report.html"
    assert main(["report", str(runs), "--suite", str(suite), "--baseline", BASELINE, "--output", str(report)]) == 0
    return {"runs": runs, "made": made, "suite": suite, "report": report, "datasets": datasets,
            "qrels": {d.name: d / "qrels" / "test.tsv" for d in datasets}}


# --------------------------------------------------------------------------- independent expectations


def _per_query(qrels_path: Path, run_path: Path, measure: str) -> dict:
    """Per-query scores straight from ir-measures (the qrels read here, not by the toolkit)."""
    import ir_measures

    lines = qrels_path.read_text().splitlines()[1:]
    qrels = [ir_measures.Qrel(q, d, int(r)) for q, d, r in (line.split("\t") for line in lines)]
    run = list(ir_measures.read_trec_run(str(run_path)))
    scores = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.parse_measure(measure)], qrels, run)}
    judged = {q.query_id for q in qrels}
    return {q: scores.get(q, 0.0) for q in judged}


@pytest.fixture(scope="module")
def expected(report_runs):
    """value, per-query scores, raw and Holm-adjusted p (statsmodels) per measure and cell."""
    from scipy.stats import ttest_rel
    from statsmodels.stats.multitest import multipletests

    found = {}
    for measure in MEASURES:
        cells = {}
        for (dataset, condition), (run, _) in report_runs["made"].items():
            per_query = _per_query(report_runs["qrels"][dataset], run, measure)
            cells[(dataset, condition)] = {"value": float(np.mean(list(per_query.values()))), "per_query": per_query}
        raw = {}
        for (dataset, condition), cell in cells.items():
            if condition == BASELINE:
                continue
            base = cells[(dataset, BASELINE)]["per_query"]
            shared = sorted(base)
            a, b = np.array([cell["per_query"][q] for q in shared]), np.array([base[q] for q in shared])
            cell["deltas"] = a - b
            raw[(dataset, condition)] = 1.0 if np.allclose(a, b) else float(ttest_rel(a, b).pvalue)
        keys = sorted(raw)
        adjusted = multipletests([raw[k] for k in keys], method="holm")[1]
        for key, p in zip(keys, adjusted):
            cells[key]["p"], cells[key]["p_adjusted"] = raw[key], float(p)
        found[measure] = cells
    return found


def _page(report_runs):
    import lxml.html

    return lxml.html.fromstring(report_runs["report"].read_text())


def _section(page, measure):
    (table,) = page.xpath(f'//table[@class="matrix"][@data-measure="{measure}"]')
    return table


# --------------------------------------------------------------------------- (a) the HTML, parsed


def test_every_number_equals_an_independent_computation(report_runs, expected):
    page = _page(report_runs)
    for measure in MEASURES:
        table = _section(page, measure)
        for (dataset, condition), want in expected[measure].items():
            (td,) = table.xpath(f'.//td[@data-row="{dataset}"][@data-column="{condition}"]')
            assert float(td.get("data-value")) == pytest.approx(want["value"], abs=1e-9), (measure, dataset, condition)
            assert td.xpath('.//span[@class="value"]')[0].text == f"{want['value']:.4f}"
            if condition == BASELINE:
                assert td.get("data-delta") is None and td.get("data-p") is None
                continue
            delta = want["value"] - expected[measure][(dataset, BASELINE)]["value"]
            assert float(td.get("data-delta")) == pytest.approx(delta, abs=1e-9)
            assert float(td.get("data-p")) == pytest.approx(want["p"], abs=1e-9)
            assert float(td.get("data-p-adjusted")) == pytest.approx(want["p_adjusted"], abs=1e-9)
            mark = td.xpath('.//span[@class="mark"]')[0].text_content()
            assert mark == ("†" if want["p_adjusted"] < 0.05 else "")
            deltas = want["deltas"]
            counts = td.xpath('.//dd[contains(@class, "won-lost")]')[0].text_content()
            assert counts == (f"{int(np.sum(deltas > 1e-12))} won, {int(np.sum(deltas < -1e-12))} lost, "
                              f"{int(np.sum(np.abs(deltas) <= 1e-12))} tied of {len(deltas)}")


def test_confidence_intervals_agree_with_scipys_bootstrap(report_runs, expected):
    """The seeded percentile bootstrap against scipy's (other draws): the same interval within Monte-Carlo error."""
    from scipy.stats import bootstrap

    page = _page(report_runs)
    measure = "nDCG@10"
    for (dataset, condition), want in expected[measure].items():
        if condition == BASELINE or not np.any(want["deltas"]):
            continue
        (td,) = _section(page, measure).xpath(f'.//td[@data-row="{dataset}"][@data-column="{condition}"]')
        low, high = map(float, re.findall(r"[-+]\d\.\d+", td.xpath('.//span[@class="ci-text"]')[0].text_content()))
        theirs = bootstrap((want["deltas"],), np.mean, confidence_level=0.95, n_resamples=10_000,
                           method="percentile", random_state=1).confidence_interval
        width = theirs.high - theirs.low
        assert low == pytest.approx(theirs.low, abs=0.1 * width + 1e-4)
        assert high == pytest.approx(theirs.high, abs=0.1 * width + 1e-4)


def test_numbers_equal_table_markdown(report_runs, capsys):
    page = _page(report_runs)
    for measure in MEASURES:
        md = _markdown_table(report_runs, measure, capsys)
        assert _dom_table(_section(page, measure)) == md, measure


STATISTICS = ("Δ", "95% CI", "p")
"""The columns `table --format md` puts after each compared condition's value."""


def _markdown_table(report_runs, measure, capsys, folder=None, suite=None) -> dict:
    """{(row, column): text} of `table --format md`: values with marks; "Δ C", "95% CI C", "p C" for the
    columns that follow condition C's value; averages (row "average")."""
    assert main(["table", str(folder or report_runs["runs"]), "--suite", str(suite or report_runs["suite"]),
                 "--baseline", BASELINE, "--measure", measure, "--format", "md"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header, current = [], None
    for name in (cell.strip() for cell in lines[0].strip("|").split("|")):
        current = current if name in STATISTICS else name
        header.append(f"{name} {current}" if name in STATISTICS else name)
    cells = {}
    for line in lines[2:]:
        values = [cell.strip() for cell in line.strip("|").split("|")]
        row = "average" if values[0].startswith("average") else values[0]
        for column, text in zip(header[1:], values[1:]):
            if text:
                cells[(row, column)] = text
    return cells


def _dom_table(table) -> dict:
    """The same cells as the page shows them (text content, as a reader sees it)."""
    def text(td, path):
        found = td.xpath(path)
        return found[0].text_content() if found else "–"

    cells = {}
    for td in table.xpath(".//tbody//td"):
        row, column = td.get("data-row"), td.get("data-column")
        if not td.get("data-reference") and column != BASELINE:      # `table` has Δ, CI and p columns for it
            cells[(row, f"Δ {column}")] = text(td, './/summary/span[contains(@class, "delta")]')
            cells[(row, f"95% CI {column}")] = text(td, './/span[@class="ci-text"]')
            cells[(row, f"p {column}")] = text(td, './/span[@class="p-text"]')
        if not td.xpath('.//span[@class="value"]'):
            cells[(row, column)] = "–"
            continue
        partial = td.xpath('.//span[@class="partial"]')
        cells[(row, column)] = (text(td, './/span[@class="value"]') + text(td, './/span[@class="mark"]').strip("–")
                                + (" " + partial[0].text_content() if partial else ""))
    for td in table.xpath(".//tfoot//td"):
        value = td.xpath('.//span[@class="value"]')
        coverage = td.xpath('.//span[@class="coverage"]')
        cells[("average", td.get("data-column"))] = (value[0].text_content() + " " + coverage[0].text_content()
                                                     if value else "–")
    return cells


def test_suite_order_reference_columns_apart_and_averages(report_runs, expected):
    page = _page(report_runs)
    assert [b.text_content() for b in page.xpath('//nav[@class="measures"]/button')] == MEASURES
    table = _section(page, "nDCG@10")
    headers = [th.get("data-column") for th in table.xpath(".//thead/tr[2]/th")]
    assert headers == [*CONDITIONS, "Paper"]
    (reference,) = table.xpath('.//thead/tr[2]/th[@data-column="Paper"]')
    assert "ref" in reference.get("class") and reference.get("title") == "a table in a paper"
    assert [tr.get("data-row") for tr in table.xpath(".//tbody/tr")] == [d.name for d in report_runs["datasets"]]
    for condition in CONDITIONS:
        if condition == ONE_DATASET:
            continue
        (td,) = table.xpath(f'.//tfoot//td[@data-column="{condition}"]')
        mean = np.mean([expected["nDCG@10"][(d.name, condition)]["value"] for d in report_runs["datasets"]])
        assert float(td.get("data-value")) == pytest.approx(mean, abs=1e-9)
        assert td.get("data-coverage") == "2"        # all of the table's datasets
    (td,) = table.xpath(f'.//tfoot//td[@data-column="{ONE_DATASET}"]')
    assert td.get("data-coverage") == "1 of 2" and not td.xpath('.//span[contains(@class, "delta")]')
    (empty,) = table.xpath(f'.//td[@data-row="{report_runs["datasets"][0].name}"][@data-column="{ONE_DATASET}"]')
    assert empty.text_content() == "–" and empty.get("data-value") is None
    # the reference column has no Δ, no test, and is not in the Δ chart
    ref_cells = table.xpath('.//td[@data-column="Paper"]')
    assert not any(td.get("data-delta") or td.xpath(".//details") for td in ref_cells)
    chart = table.xpath('ancestor::section//svg[contains(@class, "delta-chart")]')[0]
    legend = [t.text_content() for t in chart.xpath('.//text[@class="legend"]')]
    assert legend == ["bm25-tuned", "bm25-b0.9"]


def test_the_page_is_self_contained(report_runs):
    text = report_runs["report"].read_text()
    page = _page(report_runs)
    for element in page.iter():
        for attribute in ("src", "href", "xlink:href", "action", "data"):
            value = element.get(attribute)
            assert value is None or not re.match(r"\s*(https?:)?//", value), (element.tag, attribute, value)
    assert not page.xpath("//script[@src] | //link[@rel='stylesheet'] | //iframe | //img")
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert page.xpath("//style") and page.xpath("//script") and page.xpath("//svg")


def test_provenance_comes_from_the_sidecars(report_runs):
    page = _page(report_runs)
    for (dataset, condition), (run, _) in report_runs["made"].items():
        meta = json.loads(Path(f"{run}.meta.json").read_text())
        (table,) = page.xpath(f'//table[@class="provenance"][@data-condition="{condition}"]')
        fields = {tr.get("data-field"): tr.xpath("./td")[0].text_content() for tr in table.xpath(".//tr")}
        assert set(fields) >= {"model", "encoder", "toolkit", "commit", "hardware", "date", "corpus SHA-256"}
        assert meta["corpus_sha256"] in fields["corpus SHA-256"] and dataset in fields["corpus SHA-256"]
        assert fields["toolkit"] == meta["tool"]
        assert fields["commit"] == meta["git_commit"]
        assert meta["date"] in fields["date"]
        assert meta["hardware"]["cpu"] in fields["hardware"] and f"{meta['hardware']['cores']} cores" in fields["hardware"]
        assert fields["model"] == "none (BM25)"
    descriptions = [p.text_content() for p in page.xpath('//section[@class="conditions"]/p[not(@class)]')]
    assert "BM25 with Lucene's defaults" in descriptions and "Pyserini's BEIR BM25" in descriptions


def test_each_cell_names_the_command_that_makes_its_run(report_runs):
    """The command in a cell parses with the CLI's parser and asks for the run the fixture made."""
    page = _page(report_runs)
    parser = build_parser()
    table = _section(page, "R@100")
    for (dataset, condition), (run, flags) in report_runs["made"].items():
        (td,) = table.xpath(f'.//td[@data-row="{dataset}"][@data-column="{condition}"]')
        (command,) = [pre.text_content() for pre in td.xpath('.//pre[@class="command"]')]
        words = shlex.split(command)
        assert words[0] == "dupmae-eval"
        args = parser.parse_args(words[1:])
        made = parser.parse_args(["bm25", "--dataset", str(run.parent.parent.parent / dataset), *flags,
                                  "--hits", "100", "--tag", condition, "--output", str(run)])
        assert (args.verb, Path(args.dataset).name, args.fields, args.k1, args.b, args.hits, args.tag,
                args.output) == ("bm25", dataset, made.fields, made.k1, made.b, 100, condition, run)


def test_measures_chosen_and_bad_input_refused_in_one_line(report_runs, tmp_path, capsys):
    output = tmp_path / "r.html"
    assert main(["report", str(report_runs["runs"]), "--measures", "R@100", "--output", str(output)]) == 0
    page = __import__("lxml.html").html.fromstring(output.read_text())
    assert [b.text_content() for b in page.xpath('//nav[@class="measures"]/button')] == ["R@100"]
    assert not page.xpath('//td[@data-delta]')             # no baseline: no Δ
    # runs with sidecars are scored with any measure asked for, not only their dataset's
    assert main(["report", str(report_runs["runs"]), "--measures", "P@5", "--output", str(output)]) == 0
    page = __import__("lxml.html").html.fromstring(output.read_text())
    assert [b.text_content() for b in page.xpath('//nav[@class="measures"]/button')] == ["P@5"]
    capsys.readouterr()
    # reproduce's records hold the suite's measures alone
    from dupmae_eval.evaluation.results import MetricsRecord, write_metrics

    recorded = write_metrics(tmp_path / "scifact.trec", MetricsRecord(
        suite="s", condition="X", dataset="scifact", split="test", key="scifact", unit="scifact", run="scifact.trec",
        aggregate={"nDCG@10": 0.5}, per_query={"nDCG@10": {"1": 0.5}}))
    for argv, message in (
            ([str(tmp_path / "nothing")], "nothing: no such file or folder"),
            ([str(report_runs["runs"]), "--measures", "nDCG@"], "nDCG@"),
            ([str(recorded), "--measures", "P@5"], "--measures: no results for P@5"),
            ([str(report_runs["runs"]), "--baseline", "bm25-nothing"], "--baseline 'bm25-nothing' is not among"),
            ([str(report_runs["runs"]), "--suite", str(tmp_path / "none.yaml")], "no such suite file"),
            ([str(report_runs["runs"]), "--baseline", BASELINE, "--test", "anova"], "anova"),
            ([str(report_runs["runs"]), "--alpha", "0.01"], "--alpha needs --baseline")):
        bad = tmp_path / "bad.html"
        assert main(["report", *argv, "--output", str(bad)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if not line.startswith("dupmae-eval: warning: ")]
        assert len(errors) == 1 and errors[0].startswith("dupmae-eval: error: ") and message in errors[0], err
        assert not bad.exists()
    assert main(["report", str(report_runs["runs"]), "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- (b) in a real browser


def _chromium() -> str:
    """The system Chromium, for Playwright to drive (no browser is downloaded); skip, saying why, without."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser test skipped: Playwright is not installed (pip install playwright; no browser "
                    "download is needed, the system Chromium is used)")
    found = os.environ.get("DUPMAE_EVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("browser test skipped: no Chromium (apt-get install chromium, or set DUPMAE_EVAL_CHROMIUM)")
    return found


def open_in_browser(report: Path, check):
    """Open the report headless in the system Chromium; call check(page, errors) with the console errors so far."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: errors.append(f"request {request.url}")
                    if not request.url.startswith(("file:", "data:")) else None)
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            check(page, errors)
        finally:
            browser.close()


def _shown(page, measure) -> dict:
    """What the browser shows for a measure's table: {(row, column): text} as `_dom_table` reads the file."""
    return page.evaluate("""([measure, baseline]) => {
        const table = document.querySelector(`table.matrix[data-measure="${measure}"]`);
        // textContent: the CI and p sit in the cell's closed popover, which renders no text until it is opened
        const text = (td, selector) => { const found = td.querySelector(selector); return found ? found.textContent : "–"; };
        const cells = {};
        table.querySelectorAll("tbody td").forEach(td => {
            const row = td.dataset.row, column = td.dataset.column;
            if (!td.dataset.reference && column !== baseline) {
                cells[row + "\\tΔ " + column] = text(td, "summary > span.delta");
                cells[row + "\\t95% CI " + column] = text(td, "span.ci-text");
                cells[row + "\\tp " + column] = text(td, "span.p-text");
            }
            const value = td.querySelector("span.value");
            if (!value) { cells[row + "\\t" + column] = "–"; return; }
            const mark = td.querySelector("span.mark"), partial = td.querySelector("span.partial");
            cells[row + "\\t" + column] = value.innerText + (mark ? mark.innerText : "")
                + (partial ? " " + partial.innerText : "");
        });
        table.querySelectorAll("tfoot td").forEach(td => {
            const value = td.querySelector("span.value"), coverage = td.querySelector("span.coverage");
            cells["average\\t" + td.dataset.column] = value ? value.innerText + " " + coverage.innerText : "–";
        });
        return cells;
    }""", [measure, BASELINE])


def _as_keys(shown: dict) -> dict:
    return {tuple(key.split("\t")): value for key, value in shown.items()}


def test_report_in_chromium(report_runs, capsys):
    _chromium()
    markdown = {measure: _markdown_table(report_runs, measure, capsys) for measure in MEASURES}

    def check(page, errors):
        for measure in MEASURES:
            page.click(f'nav.measures button:text-is("{measure}")')
            section = page.locator(f'section.measure table[data-measure="{measure}"]')
            assert section.is_visible()
            assert _as_keys(_shown(page, measure)) == markdown[measure], measure
            others = [m for m in MEASURES if m != measure]
            assert not any(page.locator(f'table[data-measure="{m}"]').is_visible() for m in others)
        page.click('nav.measures button:text-is("nDCG@10")')
        # expanding a cell shows its p-value, CI, won/lost and command
        dataset = report_runs["datasets"][1].name
        cell = page.locator(f'table[data-measure="nDCG@10"] td[data-row="{dataset}"][data-column="bm25-b0.9"]')
        popover = cell.locator(".popover")
        assert not popover.is_visible()
        cell.locator("summary").click()
        assert popover.is_visible()
        text = popover.inner_text()
        assert re.search(r"p \(paired t-test\)\s+\d", text) and "95 % CI of Δ" in text and " won, " in text
        assert "dupmae-eval bm25 --dataset" in popover.locator("pre.command").inner_text()
        cell.locator("summary").click()
        # sorting a column reorders the rows
        rows = lambda: page.eval_on_selector_all(  # noqa: E731
            'table[data-measure="nDCG@10"] tbody tr', "rows => rows.map(r => r.dataset.row)")
        values = {d.name: float(page.get_attribute(f'table[data-measure="nDCG@10"] td[data-row="{d.name}"]'
                                                   f'[data-column="bm25-tuned"]', "data-value"))
                  for d in report_runs["datasets"]}
        header = page.locator('table[data-measure="nDCG@10"] th[data-column="bm25-tuned"] button')
        header.click()
        assert rows() == sorted(values, key=values.get, reverse=True)
        header.click()
        assert rows() == sorted(values, key=values.get)
        assert errors == [], errors

    open_in_browser(report_runs["report"], check)


DEMO = REPO / "runs" / "demo"
DEMO_CONDITIONS = ("bm25-flat", "bm25-multifield", "minilm", "splade-tiny", "dupmae-reading")


def test_demo_report_in_chromium(tmp_path, capsys):
    """The demo's report (from the runs `dupmae-eval demo` leaves in runs/demo) against `table --format md`."""
    if not all((DEMO / condition / "scifact.metrics.json").is_file() for condition in DEMO_CONDITIONS):
        pytest.skip(f"demo report test skipped: no demo runs in {DEMO} (run `make demo` first)")
    _chromium()
    report = tmp_path / "report.html"
    assert main(["report", str(DEMO), "--suite", "demo", "--baseline", "bm25-flat", "--output", str(report)]) == 0
    markdown = {measure: _markdown_table(None, measure, capsys, folder=DEMO, suite="demo") for measure in MEASURES}

    def check(page, errors):
        for measure in MEASURES:
            page.click(f'nav.measures button:text-is("{measure}")')
            assert _as_keys(_shown(page, measure)) == markdown[measure], measure
        assert errors == [], errors

    open_in_browser(report, check)


def test_a_model_runs_command_carries_every_recorded_setting(tmp_path):
    """A `run` sidecar (its encoder settings as `EncoderSettings` writes them) back to a command whose parsed
    flags give the very same settings; a `reproduce` cell also names the suite's cell."""
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.evaluation.report import reproducing_commands
    from dupmae_eval.evaluation.results import MetricsRecord
    from dupmae_eval.options import translate

    settings = EncoderSettings.for_kind("dupmae", doc_topk=None, include_sep=False, max_query_length=32,
                                        activation="relu")
    from dupmae_eval.data.datasets import BUNDLED_DATA

    meta = {"condition": "dupmae-hybrid", "dataset": "scifact", "dataset_root": str(BUNDLED_DATA / "scifact"),
            "split": "test", "model": {"source": "package:cognition/model", "revision": None},
            "encoder": settings.as_dict(), "precision": "bf16", "cell_identity": {"kind": "model"},
            "retrieval": {"mode": "hybrid", "hits": 50, "remove_query_hit": False, "quantization_scale": 50.0}}
    run = tmp_path / "runs" / "beir" / "dupmae-hybrid" / "scifact.trec"
    record = MetricsRecord(suite="beir", condition="dupmae-hybrid", dataset="scifact", split="test", key="scifact",
                           unit="scifact", run=run.name, aggregate={})
    direct, cell = reproducing_commands(record, run, meta)
    parser = build_parser()
    args = parser.parse_args(shlex.split(direct)[1:])
    overrides, runner = translate(vars(args))
    assert EncoderSettings.for_kind(args.encoder, **overrides) == settings
    assert (args.verb, args.dataset, args.split, args.model, args.retrieval, args.tag, args.output) == \
        ("run", "scifact", "test", "package:cognition/model", "hybrid", "dupmae-hybrid", run)
    assert (runner["hits"], runner["quantization_scale"], runner["precision"], runner["keep_query_hit"]) == \
        (50, 50.0, "bf16", True)
    args = parser.parse_args(shlex.split(cell)[1:])
    assert (args.verb, args.config, args.datasets, args.conditions, args.runs) == \
        ("reproduce", "beir", ["scifact"], ["dupmae-hybrid"], tmp_path / "runs")
    assert reproducing_commands(record, run, None) == []          # no sidecar: nothing to rebuild it from
    # a registry name mapped to other data (`--data msmarco-passage=SAMPLE`): the name alone would fetch the
    # whole corpus, so both commands name the folder
    sample = tmp_path / "msmarco-passage-sample"
    mapped = {**meta, "dataset": "msmarco-passage", "dataset_root": str(sample), "split": "dl19"}
    record = MetricsRecord(suite="local", condition="dupmae-hybrid", dataset="msmarco-passage", split="dl19",
                           key="msmarco-passage/dl19", unit="msmarco-passage", run=run.name, aggregate={})
    sample.mkdir()
    direct, cell = reproducing_commands(record, run, mapped)
    assert (parser.parse_args(shlex.split(direct)[1:]).dataset, parser.parse_args(shlex.split(direct)[1:]).split) \
        == (str(sample), "dl19")
    args = parser.parse_args(shlex.split(cell)[1:])
    assert (args.datasets, args.data) == (["msmarco-passage/dl19"], [f"msmarco-passage={sample}"])
    # an ir_datasets id is found by its name: no folder to map
    irds = {**meta, "dataset": "irds:beir/scifact/test", "dataset_root": "irds:beir/scifact/test"}
    record = MetricsRecord(suite="s", condition="dupmae-hybrid", dataset="irds:beir/scifact/test", split="test",
                           key="irds:beir/scifact/test", unit="irds:beir/scifact/test", run=run.name, aggregate={})
    direct, cell = reproducing_commands(record, run, irds)
    assert parser.parse_args(shlex.split(direct)[1:]).dataset == "irds:beir/scifact/test"
    assert parser.parse_args(shlex.split(cell)[1:]).data == []


def test_demo_reports_commands_parse(tmp_path):
    """Every command in the demo's report (BM25 and learned conditions) parses with the CLI's parser and asks for
    the encoder settings its sidecar records."""
    if not all((DEMO / condition / "scifact.metrics.json").is_file() for condition in DEMO_CONDITIONS):
        pytest.skip(f"no demo runs in {DEMO} (run `make demo` first)")
    import lxml.html

    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.options import translate

    report = tmp_path / "report.html"
    assert main(["report", str(DEMO), "--suite", "demo", "--baseline", "bm25-flat", "--output", str(report)]) == 0
    parser = build_parser()
    commands = [pre.text_content() for pre in lxml.html.fromstring(report.read_text()).xpath('//pre[@class="command"]')]
    assert len(commands) == 2 * len(DEMO_CONDITIONS) * len(MEASURES)         # the run's command and the suite's cell
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        if args.verb == "run":
            meta = json.loads(Path(f"{args.output}.meta.json").read_text())
            overrides, _ = translate(vars(args))
            assert EncoderSettings.for_kind(args.encoder, **overrides).as_dict() == meta["encoder"]


@pytest.mark.parametrize("flags", [["--method", "rrf", "--k", "10"],
                                   ["--method", "wsum", "--weights", "0.3", "0.7", "--norm", "zmuv"],
                                   ["--method", "combmnz", "--hits", "3", "--run-format", "json"]])
def test_a_fused_runs_command_makes_the_same_run_again(tmp_path, flags):
    """A `fuse` run's sidecar back to a `fuse` command (not "no sidecar"): run again, it writes the very
    same bytes the first `fuse` wrote."""
    from dupmae_eval.evaluation.report import reproducing_commands, _provenance_value, RunInfo
    from dupmae_eval.evaluation.results import MetricsRecord

    inputs = []
    for name, scores in (("a", [3.0, 2.0, 1.0, 0.5]), ("b", [0.9, 0.8, 0.1, 0.05])):
        path = tmp_path / f"{name}.trec"
        path.write_text("".join(f"{q} Q0 d{(i * 7 + int(q)) % 5} {i + 1} {s} {name}\n"
                                for q in ("1", "2") for i, s in enumerate(scores)))
        inputs.append(str(path))
    fused = tmp_path / "fused.out"
    assert main(["fuse", *inputs, *flags, "--tag", "mine", "--output", str(fused)]) == 0
    first = fused.read_bytes()
    meta = json.loads(Path(f"{fused}.meta.json").read_text())
    record = MetricsRecord(suite="", condition="mine", dataset="d", split="test", key="d", unit="d",
                           run=fused.name, aggregate={})
    (command,) = reproducing_commands(record, fused, meta)
    words = shlex.split(command)
    assert words[:2] == ["dupmae-eval", "fuse"]
    fused.unlink()
    Path(f"{fused}.meta.json").unlink()
    assert main(words[1:]) == 0
    assert fused.read_bytes() == first
    info = RunInfo(fused, record, meta, [command])
    assert _provenance_value("retrieval", info).startswith(f"fuse: method={flags[1]}")
    assert "not recorded" not in _provenance_value("model", info)


@pytest.mark.parametrize("run_format", ["msmarco", "json", "trec"])
def test_a_runs_command_writes_the_format_the_run_was_written_in(tmp_path, run_format):
    """A run written with --run-format msmarco or json is made again in that format, not as TREC."""
    from dupmae_eval.evaluation.report import reproducing_commands
    from dupmae_eval.evaluation.results import MetricsRecord

    record = MetricsRecord(suite="", condition="c", dataset="scifact", split="test", key="scifact",
                           unit="scifact", run="r", aggregate={})
    bm25 = {"condition": "c", "dataset": "scifact", "split": "test", "run_format": run_format,
            "retrieval": {"kind": "bm25", "fields": "flat", "k1": 0.9, "b": 0.4, "hits": 1000}}
    model = {**bm25, "model": {"source": "package:cognition/model"}, "encoder": {"kind": "splade"},
             "retrieval": {"mode": "impact", "hits": 1000}}
    parser = build_parser()
    for meta in (bm25, model):
        (command,) = reproducing_commands(record, tmp_path / "r", meta)
        assert parser.parse_args(shlex.split(command)[1:]).run_format == run_format
