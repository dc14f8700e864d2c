"""Shared by the catalog tests: a nested file tree and a pipeline runner that collects outputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.items import CatalogItem

# A nested catalog: images at the top and three folders deep, plus a non-image.
TREE = {
    "top.jpg": b"top-level image",
    "a/one.jpg": b"one",
    "a/b/two.jpg": b"two two",
    "a/b/c/three.png": b"three three three",
    "a/b/c/four.jpg": b"four",
    "notes/readme.txt": b"not an image",
}


def write_tree(root: Path, tree: dict[str, bytes] = TREE) -> Path:
    for relative, data in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def run_and_collect(
    build: Callable[[beam.Pipeline], dict[str, beam.PCollection]],
    out_dir: Path,
    options: list[str] = (),
) -> tuple[dict[str, list], beam.runners.runner.PipelineResult]:
    """Run a pipeline and read back what named PCollections held.

    Outputs go through files, not process memory, so the same helper works
    when the DoFns run in worker subprocesses.
    """
    pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
    outputs = build(pipeline)
    for name, pcoll in outputs.items():
        (pcoll | f"Json{name}" >> beam.Map(_to_json) | f"Write{name}" >> beam.io.WriteToText(str(out_dir / name)))
    result = pipeline.run()
    result.wait_until_finish()
    collected = {}
    for name in outputs:
        rows = []
        for shard in sorted(out_dir.glob(f"{name}-*")):
            rows.extend(json.loads(line) for line in shard.read_text().splitlines() if line)
        collected[name] = rows
    return collected, result


def _to_json(element) -> str:
    if isinstance(element, CatalogItem):
        return json.dumps(dataclasses.asdict(element), sort_keys=True, default=str)
    if isinstance(element, tuple) and isinstance(element[0], CatalogItem):
        return json.dumps({"uri": element[0].uri, "data": element[1].decode()}, sort_keys=True)
    return json.dumps(element, sort_keys=True, default=str)


def counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(entry.committed for entry in found)
