"""A misspelled job flag stops the job before any work, naming the flag it probably meant;
Beam's own options keep working (issue #10, weak behaviour)."""

from __future__ import annotations

from pathlib import Path

from tests.commit_helpers import run_job


def test_misspelled_flags_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_job(
        "beam_jobs.embed_images", "--input_pattern", str(tmp_path / "*.jpg"), "--output_dir", str(out),
        "--max_image_pixel", "1000", "--direct_num_workers", "1",
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown flag --max_image_pixel; did you mean --max_image_pixels?" in result.stderr
    assert not out.exists()
    result = run_job("beam_jobs.build_index", "--embeddings", "x", "--output_dir", str(out), "--target_recal", "0.9")
    assert result.returncode == 2 and "did you mean --target_recall?" in result.stderr
    # A flag of another job is unknown to this one: build_index's flags mean nothing to embed_images.
    result = run_job(
        "beam_jobs.embed_images", "--input_pattern", "x", "--output_dir", str(out), "--num_leaves", "3"
    )  # fmt: skip
    assert result.returncode == 2 and "unknown flag --num_leaves" in result.stderr


def test_an_output_dir_inside_the_input_glob_is_refused(tmp_path: Path) -> None:
    """A workspace inside the input pattern would feed each run's outputs back as the next run's inputs."""
    (tmp_path / "photos").mkdir()
    result = run_job(
        "beam_jobs.embed_images", "--input_pattern", str(tmp_path / "**"), "--output_dir", str(tmp_path / "ws" / "out")
    )  # fmt: skip
    assert result.returncode == 2 and "matches this job's own outputs" in result.stderr


def test_every_job_flag_is_declared_once_across_all_jobs() -> None:
    """Beam parses every PipelineOptions class with one parser: a flag two jobs both declare breaks every
    job in a process that imports both (the demo, the nightly, tests). Shared flags go in CommonJobOptions."""
    import importlib
    import pkgutil

    from apache_beam.options.pipeline_options import PipelineOptions

    import beam_jobs

    for module in pkgutil.iter_modules(beam_jobs.__path__):
        importlib.import_module(f"beam_jobs.{module.name}")
    options = PipelineOptions(["--embeddings", "x"])
    assert options.get_all_options()["embeddings"] == "x"
