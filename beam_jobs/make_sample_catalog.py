"""Writes a synthetic captioned catalog: D/images/*.jpg and D/manifest.jsonl.

    python -m beam_jobs.make_sample_catalog --output_dir D --num_images N --seed S

Scenes of 1-3 colored shapes at named positions over varied backgrounds, each
with a caption naming every object. Scene i of seed S is identical on every
run, so catalogs can be regenerated instead of stored.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import launcher
from beam_jobs.common_options import CommonJobOptions, common
from beam_jobs.job_logging import configure_logging
from sample_catalog.generate import FORMATS, CatalogSettings, generate_item
from transforms.catalog import uris

LOG = logging.getLogger("make_sample_catalog")


MAX_IMAGE_SIZE = 4096
# Indices are created in blocks so a 1M-image launch graph holds 1K numbers, not 1M.
INDEX_BLOCK = 1000


class SampleCatalogOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument
        add("--num_images", type=int, default=None, help="number of scenes to generate (> 0); required")
        add("--image_size", type=int, default=256, help=f"side of the square images in pixels, 32-{MAX_IMAGE_SIZE}")
        add("--format", dest="image_format", default="jpeg", help=f"image file format: {' or '.join(FORMATS)}")
        add("--jpeg_quality", type=int, default=90, help="JPEG quality, 1-95 (ignored for png)")
        add("--short_captions", type=int, default=0, help="partial captions per row for encoder training, 0-32")


def validate(options: SampleCatalogOptions) -> CatalogSettings:
    """Every check that can fail runs here, before the pipeline starts."""
    shared = common(options)
    if options.num_images is None:
        raise launcher.UsageError("--num_images is required")
    if options.num_images <= 0:
        raise launcher.UsageError(f"--num_images must be positive, got {options.num_images}")
    if shared.seed < 0:
        raise launcher.UsageError(f"--seed must be >= 0, got {shared.seed}")
    if not 32 <= options.image_size <= MAX_IMAGE_SIZE:
        raise launcher.UsageError(
            f"--image_size must be between 32 and {MAX_IMAGE_SIZE} pixels, got {options.image_size}"
        )
    if options.image_format not in FORMATS:
        raise launcher.UsageError(f"--format must be one of {', '.join(FORMATS)}, got {options.image_format!r}")
    if not 1 <= options.jpeg_quality <= 95:
        raise launcher.UsageError(f"--jpeg_quality must be between 1 and 95, got {options.jpeg_quality}")
    if not 0 <= options.short_captions <= 32:
        raise launcher.UsageError(f"--short_captions must be between 0 and 32, got {options.short_captions}")
    launcher.check_writable(shared.output_dir, "--output_dir")
    return CatalogSettings(
        shared.seed, options.image_size, options.image_format, options.jpeg_quality, options.short_captions
    )


def index_block(start: int, stop: int) -> range:
    return range(start, min(start + INDEX_BLOCK, stop))


class RenderAndWrite(beam.DoFn):
    """Renders scene `index`, writes its image file, and emits (id, manifest line)."""

    def __init__(self, settings: CatalogSettings, images_dir: str) -> None:
        self._settings = settings
        self._images_dir = images_dir
        self._written = beam.metrics.Metrics.counter("sample_catalog", "images_written")
        self._bytes = beam.metrics.Metrics.counter("sample_catalog", "image_bytes_written")

    def process(self, index: int):
        row, data = generate_item(self._settings, index)
        uri = FileSystems.join(self._images_dir, row["id"] + FORMATS[self._settings.image_format])
        with FileSystems.create(uri) as handle:
            handle.write(data)
        self._written.inc()
        self._bytes.inc(len(data))
        yield row["id"], json.dumps({"uri": uri, **row})


def write_manifest(keyed_lines: list[tuple[str, str]], path: str) -> int:
    """Writes the lines sorted by id, so the manifest of a seed is byte-identical on every run."""
    with FileSystems.create(path) as handle:
        for _, line in sorted(keyed_lines):
            handle.write(line.encode("utf-8") + b"\n")
    return len(keyed_lines)


def build(pipeline: beam.Pipeline, settings: CatalogSettings, num_images: int, output_dir: str) -> None:
    images_dir = FileSystems.join(output_dir, "images")
    manifest_path = FileSystems.join(output_dir, "manifest.jsonl")
    _ = (
        pipeline
        | "IndexBlocks" >> beam.Create(range(0, num_images, INDEX_BLOCK))
        | "Indices" >> beam.FlatMap(index_block, num_images)
        | "Spread" >> beam.Reshuffle()
        | "RenderAndWrite" >> beam.ParDo(RenderAndWrite(settings, images_dir))
        # Manifest lines are ~400 bytes: 1M of them fit one worker. ToList also makes the
        # manifest wait for every image, so a reader never sees a line whose image is missing.
        | "Collect" >> beam.combiners.ToList()
        | "WriteManifest" >> beam.Map(write_manifest, manifest_path)
    )


def _counter(result, name: str) -> int:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("sample_catalog").with_name(name))
    return sum(c.committed or c.attempted or 0 for c in query["counters"])


def run(argv: list[str] | None = None) -> int:
    options = launcher.default_to_direct_runner(SampleCatalogOptions(argv))
    with launcher.usage_errors_exit():
        settings = validate(options)
    output_dir = uris.absolutize_local(options.view_as(CommonJobOptions).output_dir)
    manifest_path = FileSystems.join(output_dir, "manifest.jsonl")
    started = time.perf_counter()
    LOG.info("generating %d scenes (seed %d) into %s", options.num_images, settings.seed, output_dir)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings, options.num_images, output_dir)
    result = pipeline.run()
    result.wait_until_finish()
    try:
        images, size = _counter(result, "images_written"), _counter(result, "image_bytes_written")
    except Exception:  # some runners (e.g. a Dataflow dry run) report no metrics
        images, size = options.num_images, 0
    LOG.info(
        "wrote %d images (%.1f MB) to %s and the manifest %s in %.1f s",
        images,
        size / 1e6,
        FileSystems.join(output_dir, "images"),
        manifest_path,
        time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
