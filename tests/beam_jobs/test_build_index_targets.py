"""build_index tells the truth about recall targets: eval.json, the last log line, --require_targets (exit 5).

3,000 clustered 128-d rows (sample_catalog.vectors) with the bundled model: an on-device target of
0.999 is out of reach (recall@10 tops out near 0.985 with 1-dim blocks, 0.89 with 2-dim ones).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beam_jobs import build_index
from encoders import model_config
from index_builder.ondevice.reference_search import ReferenceSearcher
from index_builder.query_encoders import TextQueryEncoder
from sample_catalog.vectors import clustered_unit_vectors, write_embeddings
from tests import ROOT

MISSED = re.compile(r"target missed: best reachable 0\.9\d{3} at 128 B/item")


def build_args(embeddings: Path, output_dir: Path) -> list[str]:
    return [
        "--embeddings",
        str(embeddings / "*.parquet"),
        "--output_dir",
        str(output_dir),
        "--eval_queries",
        "200",
        "--num_leaves",
        "40",  # fixed tree sizes keep the test to three trainings
        "--ondevice_num_leaves",
        "40",
        "--ondevice_target_recall",
        "0.999",
    ]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def missed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Embeddings, and the index build_index made of them without --require_targets (with its log)."""
    base = tmp_path_factory.mktemp("targets")
    config = json.loads((model_config.DEFAULT_MODEL_DIR / "model_config.json").read_text())
    vectors = clustered_unit_vectors(3000, config["embedding_dim"], rows_per_cluster=40, noise=0.3, seed=3)
    write_embeddings(base / "embeddings", vectors, config["model_id"])
    logger, records = logging.getLogger("build_index"), Records()
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(records)
    try:
        result = build_index.run(build_args(base / "embeddings", base / "index"))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    return {"base": base, "index": base / "index", "result": result, "log": records.records}


def test_missed_target_is_reported_and_the_job_still_succeeds_without_require_targets(missed: dict) -> None:
    index = missed["index"]
    assert missed["result"].exit_code == 0 and (index / "_SUCCESS").exists()
    evaluation = json.loads((index / "eval.json").read_text())
    device, server = evaluation["ondevice"], evaluation["server"]
    assert device["target_recall"] == 0.999 and device["target_met"] is False
    assert MISSED.fullmatch(device["target_message"]), device["target_message"]
    assert server["target_recall"] == 0.95 and server["target_met"] is True and "target_message" not in server
    # Out of reach at 2 dims per block by more than the tolerance: the 128-byte code was taken.
    config = json.loads((index / "index_config.json").read_text())
    assert config["ondevice"]["params"]["dims_per_block"] == 1 and device["bytes_per_item_codes"] == 128
    last = missed["log"][-1]
    assert last.levelno == logging.WARNING and "on-device: " + device["target_message"] in last.getMessage()


def test_require_targets_exits_5_after_writing_the_index(missed: dict) -> None:
    index = missed["base"] / "required"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.build_index",
            *build_args(missed["base"] / "embeddings", index),
            "--require_targets",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 5, completed.stderr[-2000:]
    assert (index / "_SUCCESS").exists() and (index / "text_searcher.tflite").exists()
    assert MISSED.search(completed.stderr)
    assert json.loads((index / "eval.json").read_text())["ondevice"]["target_met"] is False


@pytest.mark.task_library
def test_task_library_text_searcher_loads_a_one_dim_per_block_index(missed: dict) -> None:
    """The real TextSearcher (tflite-support 0.4.4) with 128 one-dimensional AH blocks: it returns what
    the numpy twin of its search returns over the same index.ldb."""
    from index_builder import task_library_searcher

    index = missed["index"]
    model = index / "text_searcher.tflite"
    texts = ["a red circle on a blue background", "two green stars", "a small yellow square", "purple triangle"]
    found = [[hit["metadata"] for hit in hits] for hits in task_library_searcher.text_search(model, texts, 10)]
    assert json.loads((index / "index_config.json").read_text())["ondevice"]["params"]["dims_per_block"] == 1
    reference = ReferenceSearcher(str(index / "index.ldb"))
    encoder = TextQueryEncoder(model)
    for text, hits in zip(texts, found):
        expected = [n.metadata.decode() for n in reference.search(encoder.embed(text), 10)]
        assert len(hits) == 10 and len(set(hits) & set(expected)) >= 9, (text, hits, expected)


def test_a_code_size_the_sample_accepts_but_the_catalog_cannot_hold_gives_way_to_finer_codes(tmp_path: Path) -> None:
    """Beam encoding: the 5,000-row sample meets 0.9 with 64-byte codes, but all 20,000 rows reach only about
    0.90 with them (below 0.9 at the confidence margin; measured before the catalog probe existed). The probe
    sees that before encoding, so 128-byte codes are trained on the sample and every row meets the target."""
    config = json.loads((model_config.DEFAULT_MODEL_DIR / "model_config.json").read_text())
    write_embeddings(tmp_path / "embeddings", clustered_unit_vectors(20_000, 128, seed=3), config["model_id"])
    args = ["--embeddings", str(tmp_path / "embeddings" / "*.parquet"), "--output_dir", str(tmp_path / "index")]
    build_index.run([*args, "--training_sample_size", "5000", "--num_leaves", "70", "--ondevice_num_leaves", "35"])
    device = json.loads((tmp_path / "index" / "eval.json").read_text())["ondevice"]
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())["ondevice"]
    assert config["encoding"] == "beam" and config["params"]["dims_per_block"] == 1
    [check] = config["code_size_checked_on_catalog"]
    assert check["dims_per_block"] == 2 and check["holds"] is False
    assert check["predicted_catalog_recall"] < 0.9 < check["sample_recall"], check
    # Trained and swept, but no longer counted as meeting the target: the catalog check rejected them.
    coarse = [t for t in config["tuning"]["trials"] if t["dims_per_block"] == 2]
    assert coarse and not any(t["meets_target"] for t in coarse)
    assert {t["num_leaves"] for t in config["tuning"]["trials"] if t["dims_per_block"] == 1} == {check["num_leaves"]}
    assert device["target_met"] is True, device
