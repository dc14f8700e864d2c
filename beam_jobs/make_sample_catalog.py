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
from transforms.sample_catalog.generate import FORMATS, CatalogSettings, generate_item

LOG = logging.getLogger("make_sample_catalog")


class SampleCatalogOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--output_dir", required=True, help="catalog folder (local, gs:// or s3://)")
        parser.add_argument("--num_images", type=int, required=True, help="number of scenes to generate")
        parser.add_argument("--seed", type=int, default=0, help="catalog seed: same seed, same catalog")
        parser.add_argument("--image_size", type=int, default=256, help="side of the square images in pixels")
        parser.add_argument("--format", dest="image_format", default="jpeg", help="jpeg or png")
        parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality, 1-95")


def validate(options: SampleCatalogOptions) -> CatalogSettings:
    if options.num_images <= 0:
        raise launcher.UsageError(f"--num_images must be positive, got {options.num_images}")
    if not 32 <= options.image_size <= 4096:
        raise launcher.UsageError(f"--image_size must be between 32 and 4096, got {options.image_size}")
    if options.image_format not in FORMATS:
        raise launcher.UsageError(f"--format must be one of {', '.join(FORMATS)}, got {options.image_format!r}")
    if not 1 <= options.jpeg_quality <= 95:
        raise launcher.UsageError(f"--jpeg_quality must be between 1 and 95, got {options.jpeg_quality}")
    launcher.check_writable(options.output_dir, "--output_dir")
    return CatalogSettings(options.seed, options.image_size, options.image_format, options.jpeg_quality)


class RenderAndWrite(beam.DoFn):
    def __init__(self, settings: CatalogSettings, images_dir: str) -> None:
        self._settings = settings
        self._images_dir = images_dir
        self._written = beam.metrics.Metrics.counter("sample_catalog", "images_written")
        self._bytes = beam.metrics.Metrics.counter("sample_catalog", "bytes_written")

    def process(self, index: int):
        row, data = generate_item(self._settings, index)
        uri = FileSystems.join(self._images_dir, row["id"] + FORMATS[self._settings.image_format])
        with FileSystems.create(uri) as handle:
            handle.write(data)
        self._written.inc()
        self._bytes.inc(len(data))
        yield json.dumps({"uri": uri, **row}, sort_keys=False)


def write_manifest(lines: list[str], path: str) -> None:
    with FileSystems.create(path) as handle:
        for line in sorted(lines):
            handle.write(line.encode("utf-8") + b"\n")


def run(argv: list[str] | None = None) -> int:
    options = launcher.default_to_direct_runner(SampleCatalogOptions(argv))
    with launcher.usage_errors_exit():
        settings = validate(options)
    output_dir = launcher.absolute(options.output_dir)
    images_dir = FileSystems.join(output_dir, "images")
    manifest_path = FileSystems.join(output_dir, "manifest.jsonl")
    started = time.perf_counter()
    LOG.info("generating %d scenes (seed %d) into %s", options.num_images, settings.seed, output_dir)
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Indices" >> beam.Create(range(options.num_images))
            | "Spread" >> beam.Reshuffle()
            | "RenderAndWrite" >> beam.ParDo(RenderAndWrite(settings, images_dir))
            # Manifest lines are small (~300 bytes): even 1M fit one worker; sorting makes the file reproducible.
            | "Collect" >> beam.combiners.ToList()
            | "WriteManifest" >> beam.Map(write_manifest, manifest_path)
        )
    LOG.info(
        "wrote %d images to %s and %s in %.1f s",
        options.num_images, images_dir, manifest_path, time.perf_counter() - started,
    )
    print(f"catalog: {manifest_path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.exit(run())
