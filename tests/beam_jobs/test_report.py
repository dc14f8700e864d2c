"""beam_jobs.report on a real nightly workspace (two runs, rejected inputs), read as HTML and
rendered by headless Chromium (Debian's package, installed by scripts/install_chromium.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from beam_jobs import build_index, nightly, report
from nightly import latest_file
from nightly.latest_file import LatestState
from tests.embed_helpers import write_catalog
from tests.index_builder.report.html_outline import ids, outline, points_in

SEED, SIZE, COUNT = 5, 64, 300  # build_index needs >= 256 rows
SECTIONS = {"tuning", "eval", "rejected", "history", "map", "queries"}
COLORS = ["red", "green", "blue", "yellow"]


def night(manifest: Path, workspace: Path, run_id: str) -> dict:
    return nightly.run(
        ["--manifest", str(manifest), "--workspace", str(workspace), "--run_id", run_id, "--eval_queries", "50"]
    )


def expected_tuning_points(tuning: dict) -> int:
    """Every trial, plus the chosen configuration when it is not one of them (re-checked on the full index)."""

    def key_of(trial: dict) -> tuple:
        return trial["num_leaves"], trial["num_leaves_to_search"], trial["reorder"]

    return len(tuning["trials"]) + (key_of(tuning["chosen"]) not in {key_of(t) for t in tuning["trials"]})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Night 1: COUNT images plus one missing and one empty file; night 2: five images deleted."""
    base = tmp_path_factory.mktemp("report_ws")
    manifest = write_catalog(base / "catalog", COUNT, seed=SEED, image_size=SIZE)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (base / "catalog" / "empty.jpg").write_bytes(b"")
    broken = [
        {"uri": str(base / "catalog" / "missing.jpg"), "id": "missing"},
        {"uri": str(base / "catalog" / "empty.jpg"), "id": "empty"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + broken))
    ws = base / "ws"
    first = night(manifest, ws, "20260101T000000.000000Z")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows[5:] + broken))
    second = night(manifest, ws, "20260102T000000.000000Z")
    assert first["published"] and second["published"]
    output = base / "report.html"
    report.run(
        [
            "--workspace",
            str(ws),
            "--output",
            str(output),
            "--color_column",
            "caption",
            "--color_terms",
            ",".join(COLORS),
            "--query",
            "a large red circle",
        ]
    )
    return {"ws": ws, "output": output, "page": output.read_text(), "first": first, "second": second}


def test_build_index_writes_a_report_into_every_index(workspace: dict) -> None:
    for run_id in ("20260101T000000.000000Z", "20260102T000000.000000Z"):
        page = (workspace["ws"] / "runs" / run_id / "index" / "report.html").read_text()
        assert {"tuning", "eval", "map", "queries"} <= ids(outline(page))


def test_a_rebuild_in_place_lists_this_builds_report_in_the_manifest(workspace: dict, tmp_path: Path) -> None:
    """The report is written after MANIFEST.json (it shows its file sizes) and then added to it, so the
    committed index's file list and hashes cover it, and a rebuild lists its own report, not the old one."""
    import hashlib

    embeddings = str(workspace["ws"] / "runs" / "20260101T000000.000000Z" / "embeddings" / "*.parquet")
    for _ in range(2):
        build_index.run(["--embeddings", embeddings, "--output_dir", str(tmp_path / "index"), "--eval_queries", "50"])
        manifest = json.loads((tmp_path / "index" / "MANIFEST.json").read_text())["files"]
        report = (tmp_path / "index" / "report.html").read_bytes()
        assert manifest["report.html"]["sha256"] == hashlib.sha256(report).hexdigest()
        assert {"tuning", "eval", "map", "queries"} <= ids(outline((tmp_path / "index" / "report.html").read_text()))


def test_report_has_every_section_with_the_right_points(workspace: dict) -> None:
    elements = outline(workspace["page"])
    assert ids(elements) >= SECTIONS
    index = workspace["ws"] / "runs" / "20260102T000000.000000Z" / "index"
    config = json.loads((index / "index_config.json").read_text())
    for key in ("server", "ondevice"):
        expected = expected_tuning_points(config[key]["tuning"])
        for chart in (f"{key}-latency", f"{key}-leaves"):
            points = points_in(elements, chart)
            assert len(points) == expected, chart
            assert sum("chosen" in p.classes for p in points) == 1
    map_points = points_in(elements, "embedding-map")
    assert len(map_points) == COUNT - 5  # every item of the published run (fewer than the sample size)
    assert {p.attrs["data-series"] for p in map_points} <= {*COLORS, "other"}
    assert sum("data-thumb" in p.attrs for p in map_points) == COUNT - 5  # local images: all have thumbnails
    assert len(points_in(elements, "history-embedded")) == 2


def test_report_figures_come_from_the_run(workspace: dict) -> None:
    page = workspace["page"]
    rejected = page[page.index('id="rejected"') : page.index('id="history"')]
    assert re.search(r"<td>not_found</td><td>1</td>", rejected) and re.search(r"<td>empty</td><td>1</td>", rejected)
    assert "missing.jpg" in rejected
    history = page[page.index('id="history"') : page.index('id="map"')]
    for night_summary in (workspace["first"], workspace["second"]):  # items, new, changed, deleted per run
        figures = [night_summary[k] for k in ("embedded", "new", "changed", "deleted")]
        assert "".join(f"<td>{v}</td>" for v in figures) in history
    assert workspace["first"]["embedded"] == COUNT and workspace["second"]["deleted"] == 5
    queries = page[page.index('id="queries"') :]
    assert "a large red circle" in queries and queries.count('class="result"') == 10
    assert queries.count('src="data:image/jpeg;base64,') == 10


def test_report_job_refuses_what_is_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        report.run(["--index", str(tmp_path), "--output", str(tmp_path / "r.html")])
    assert stopped.value.code == 2 and "index_config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        report.run(["--workspace", str(tmp_path)])
    assert stopped.value.code == 2 and "nothing published" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        report.run(["--workspace", str(tmp_path), "--colour_column", "caption"])
    assert stopped.value.code == 2 and "unknown flag(s): --colour_column" in capsys.readouterr().err


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]
# Dispatches a hover on the first map point and records what the tooltip then shows.
HOVER_PROBE = """<script>
var point = document.querySelector("#embedding-map circle.point[data-thumb]");
point.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: 10, clientY: 10}));
var tip = document.getElementById("map-tip");
var widths = Array.from(document.querySelectorAll("svg.chart")).map(function (c) { return c.getBoundingClientRect().width; });
document.body.setAttribute("data-probe", JSON.stringify({
  display: tip.style.display, src: tip.querySelector("img").src.slice(0, 23),
  text: tip.querySelector("span").textContent, expected: point.getAttribute("data-text"), widths: widths}));
</script></body>"""


def render(page: Path, tmp_path: Path) -> tuple[str, str]:
    """The DOM after scripts ran, and Chromium's log (console messages are logged as INFO:CONSOLE)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/install_chromium.sh could not install it)")
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_report_renders_in_chromium_without_console_errors(workspace: dict, tmp_path: Path) -> None:
    dom, log = render(workspace["output"], tmp_path)
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert console == []
    elements = outline(dom)
    assert ids(elements) >= SECTIONS
    map_points = points_in(elements, "embedding-map")
    root = next(e for e in elements if e.tag == "html")
    assert int(root.attrs["data-map-points"]) == len(map_points) == COUNT - 5  # the hover script ran
    config = json.loads(
        (workspace["ws"] / "runs" / "20260102T000000.000000Z" / "index" / "index_config.json").read_text()
    )
    for key in ("server", "ondevice"):
        assert len(points_in(elements, f"{key}-latency")) == expected_tuning_points(config[key]["tuning"])


def test_hovering_a_map_point_shows_its_thumbnail(workspace: dict, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(workspace["page"].replace("</body>", HOVER_PROBE))
    dom, log = render(probed, tmp_path)
    assert [line for line in log.splitlines() if "CONSOLE" in line] == []
    body = next(e for e in outline(dom) if e.tag == "body")
    probe = json.loads(body.attrs["data-probe"])
    assert probe["display"] == "block" and probe["src"] == "data:image/jpeg;base64,"
    assert probe["text"] == probe["expected"] and probe["text"]
    # Every chart was laid out: 2 per index, 2 eval bar charts, 4 history charts, the map.
    assert len(probe["widths"]) == 2 * 2 + 2 + 4 + 1 and min(probe["widths"]) > 100


def test_report_on_a_gcs_index_answers_queries_from_a_local_copy(workspace: dict, gcs_emulator) -> None:
    index = workspace["ws"] / "runs" / "20260102T000000.000000Z" / "index"
    gcs_emulator.upload_directory(index, "report-bucket", "indexes/latest")
    args = ["--index", "gs://report-bucket/indexes/latest", "--output", "gs://report-bucket/report.html"]
    written = report.run([*args, "--num_queries", "2", *gcs_emulator.beam_options()])
    assert written == "gs://report-bucket/report.html"
    page = gcs_emulator.bucket("report-bucket").blob("report.html").download_as_text()
    elements = outline(page)
    assert ids(elements) >= SECTIONS - {"history"}
    assert page.count('<section class="query">') == 2 and page.count('class="result"') == 20
    config = json.loads((index / "index_config.json").read_text())
    assert len(points_in(elements, "server-leaves")) >= len(config["server"]["tuning"]["trials"])


def test_report_on_a_gcs_workspace_reads_its_history(workspace: dict, gcs_emulator) -> None:
    gcs_emulator.upload_directory(workspace["ws"] / "runs", "report-ws", "ws/runs")
    latest = "20260102T000000.000000Z"
    latest_file.write_latest(
        "gs://report-ws/ws", {"run_id": latest, "index": f"gs://report-ws/ws/runs/{latest}/index"}, LatestState(None)
    )
    written = report.run(
        ["--workspace", "gs://report-ws/ws", "--output", "gs://report-ws/report.html", *gcs_emulator.beam_options()]
    )
    page = gcs_emulator.bucket("report-ws").blob("report.html").download_as_text()
    assert written == "gs://report-ws/report.html" and ids(outline(page)) >= SECTIONS
    history = page[page.index('id="history"') : page.index('id="map"')]
    assert "Workspace history (2 runs)" in history and f"<td>{latest}</td><td>yes</td>" in history
