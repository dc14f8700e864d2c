"""Reads through a fault-injecting proxy in front of the GCS emulator and the S3 server: every object
arrives whole exactly once, and one object failing forever costs a bounded number of requests and ends
as read_error (issue #10, failure 9). The slow variant injects >= 500 faults (docs/RELIABILITY.md)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests.fault_proxy import FaultProxy
from tests.storage_servers import environment
from transforms.catalog import reading

ATTEMPTS = 8


def objects(count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"photos/{index:04d}.jpg": rng.randbytes(rng.randint(1, 96_000)) for index in range(count)}


@pytest.fixture
def through_proxy(request) -> Iterator:
    """Yields open_store(store, count, rate, seed) -> (uri prefix, objects, proxy), all reads via the proxy."""
    opened = []

    def open_store(store: str, count: int, rate: float, seed: int, fail_forever: tuple[str, ...] = ()):
        data = objects(count, seed)
        bucket = f"faults-{store}-{seed}"
        if store == "gcs":
            server = request.getfixturevalue("gcs_emulator")
            server.bucket(bucket)
            upstream = server.endpoint
        else:
            server = request.getfixturevalue("s3_server")
            server.create_bucket(bucket)
            upstream = server.endpoint
        for name, blob in data.items():
            server.upload_bytes(bucket, name, blob)
        proxy = FaultProxy(upstream, rate, seed=seed, fail_forever=fail_forever, delay_seconds=0.05).__enter__()
        opened.append(proxy)
        if store == "gcs":
            context = environment({"STORAGE_EMULATOR_HOST": proxy.url})
            context.__enter__()
            opened.append(context)
            FileSystems.set_options(PipelineOptions(server.beam_options()))
            prefix = f"gs://{bucket}/"
        else:
            options = [o for o in server.beam_options() if not o.startswith("--s3_endpoint_url")]
            FileSystems.set_options(PipelineOptions([*options, f"--s3_endpoint_url={proxy.url}"]))
            prefix = f"s3://{bucket}/"
        reading.reset_clients()
        return prefix, data, proxy

    yield open_store
    for resource in reversed(opened):
        resource.__exit__(None, None, None)
    reading.reset_clients()


def read_all(prefix: str, data: dict[str, bytes]) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 of every object read, and the error type of every object that failed."""
    digests, failures = {}, {}
    for name in data:
        try:
            got = reading.read_bytes_with_retry(prefix + name, attempts=ATTEMPTS, base_delay=0.01, max_bytes=200_000)
        except reading.ReadFailed as failure:
            failures[name] = failure.error_type
            continue
        digests[name] = hashlib.sha256(got).hexdigest()
    return digests, failures


def check_store(through_proxy, store: str, count: int, rate: float, seed: int) -> int:
    doomed = "photos/0003.jpg"
    prefix, data, proxy = through_proxy(store, count, rate, seed, fail_forever=(doomed.split("/")[-1],))
    digests, failures = read_all(prefix, data)
    assert failures == {doomed: "read_error"}, "only the object failing forever fails"
    expected = {name: hashlib.sha256(blob).hexdigest() for name, blob in data.items() if name != doomed}
    assert digests == expected, "every other object arrives whole, exactly once"
    assert proxy.requests_for(doomed.split("/")[-1]) <= ATTEMPTS, "no hidden client retries on the bad object"
    assert {"503", "reset", "truncate", "delay"} <= set(proxy.faults)
    print(f"{store}: {count} objects, faults {dict(proxy.faults)}")
    return proxy.total_faults


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_faulty_reads_lose_nothing_and_a_dead_object_costs_bounded_requests(through_proxy, store: str) -> None:
    assert check_store(through_proxy, store, count=40, rate=0.3, seed=1) >= 10


@pytest.mark.slow
def test_five_hundred_faults_across_gcs_and_s3(through_proxy) -> None:
    injected = sum(check_store(through_proxy, store, count=450, rate=0.4, seed=7) for store in ("gcs", "s3"))
    print(f"injected faults: {injected}")
    assert injected >= 500


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_a_server_that_went_away_ends_every_read_as_read_error(through_proxy, store: str) -> None:
    """Nothing hangs and nothing is lost silently: each object is accounted for as read_error."""
    prefix, data, proxy = through_proxy(store, 5, 0.0, seed=3)
    proxy.__exit__(None, None, None)  # the endpoint now refuses connections
    digests, failures = read_all(prefix, data)
    assert digests == {} and failures == dict.fromkeys(data, "read_error")
