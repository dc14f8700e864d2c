"""What every job's launcher shares: usage errors, path checks, logging."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import uuid
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from transforms.catalog import uris


class UsageError(ValueError):
    """A bad flag or input found before any work; the message says what to fix."""


@contextlib.contextmanager
def usage_errors_exit(code: int = 2) -> Iterator[None]:
    try:
        yield
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(code)


def reject_unknown_flags(options: PipelineOptions) -> None:
    """A misspelled flag (--max_image_pixel) must stop the job, not be dropped with a log line while the
    default silently applies. Known = every flag of every registered PipelineOptions class (Beam's own
    and this project's), parsed the way Beam parses them."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    _known, unknown = parser.parse_known_args(options._flags)  # _flags: the argv the options were built from
    if not unknown:
        return
    flag = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    names = [name for action in parser._actions for name in action.option_strings]
    close = difflib.get_close_matches(flag.split("=", 1)[0], names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UsageError(f"unknown flag {flag}{hint} (see --help for this job's flags)")


def check_writable(directory: str, flag: str) -> None:
    """Creates and deletes a probe object so an unwritable output fails before any work."""
    directory = uris.absolutize_local(directory)
    if uris.is_local(directory):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise UsageError(f"{flag} {directory} cannot be created: {error.strerror}") from error
    probe = FileSystems.join(directory, f".write-probe-{uuid.uuid4().hex}")
    try:
        with FileSystems.create(probe) as handle:
            handle.write(b"probe")
        FileSystems.delete([probe])
    except Exception as error:  # any filesystem's failure means the same thing to the user
        raise UsageError(f"{flag} {directory} is not writable: {error}") from error


def default_to_direct_runner(options: PipelineOptions) -> PipelineOptions:
    """Without --runner, Beam 2.77's DirectRunner first tries to download the Prism
    runner binary from the internet; its in-process FnApiRunner (which honours
    --direct_num_workers and --direct_running_mode) needs nothing from the network."""
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "FnApiRunner"
    return options


def dataflow_step_names(result) -> list[str]:
    """User names of the steps of a job translated with --dry_run (the offline Dataflow check)."""
    job = getattr(result, "job", None)
    if job is None:
        return []
    names = []
    for step in job.proto.steps or []:
        for prop in step.properties.additionalProperties:
            if prop.key == "user_name":
                names.append(prop.value.string_value)
    if not names and getattr(job, "proto_pipeline", None) is not None:
        # Runner v2 submits the portable pipeline instead of v1 steps.
        names = [t.unique_name for t in job.proto_pipeline.components.transforms.values()]
    return names


def pipeline_counters(result: PipelineResult) -> dict[str, int]:
    try:
        query = result.metrics().query()
    except Exception:  # some runners cannot report metrics; the summary's counts do not depend on them
        return {}
    values = {
        f"{c.key.metric.namespace}.{c.key.metric.name}": int(c.committed or c.attempted or 0) for c in query["counters"]
    }
    for distribution in query["distributions"]:
        result_value = distribution.committed or distribution.attempted
        if result_value is not None:
            # e.g. embed.batch_encode_ms_sum: the encoder's own time, what incremental runs save.
            values[f"{distribution.key.metric.namespace}.{distribution.key.metric.name}_sum"] = int(result_value.sum)
    return values


def pipeline_options_from(beam_args: list[str]) -> PipelineOptions:
    """Beam options from the flags a job's own argparse parser left over. A flag neither knows is a
    usage error: Beam alone would only log that it discarded it, and a typo would pass silently."""
    options = PipelineOptions(beam_args)
    unknown = set(options.get_all_options(drop_default=True, retain_unknown_options=True)) - set(
        options.get_all_options(drop_default=True)
    )
    if unknown:
        raise UsageError(f"unknown flag(s): {', '.join('--' + name for name in sorted(unknown))} (see --help)")
    return options
