"""Real object-storage servers on loopback for tests: a GCS emulator and an S3 server.

Why real servers: listing, globbing and reading behave differently per filesystem
(prefix listing, directory placeholders, error codes), and only a server that
speaks the real protocol lets Beam's own gs:// and s3:// filesystems exercise
that code. Both servers run as threads inside the pytest process, bind only
127.0.0.1 on a free port, keep everything in memory and stop at session end.

The environment variables they set (STORAGE_EMULATOR_HOST, AWS_*) are inherited
by Beam's multi-processing workers, which is what makes those workers reach the
servers too. Both handles also give the pipeline options that say the same thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"


def free_loopback_port() -> int:
    """A port nothing listens on right now (the GCS emulator needs a number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore the previous values after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in previous.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def local_files(directory: Path) -> list[tuple[Path, str]]:
    """Every file below directory with its relative posix path, in a stable order."""
    directory = Path(directory)
    return [(path, path.relative_to(directory).as_posix()) for path in sorted(directory.rglob("*")) if path.is_file()]


def _object_name(prefix: str, relative: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{relative}" if prefix else relative


@dataclass
class GcsEmulator:
    """Handle on a running gcp-storage-emulator; `endpoint` is http://127.0.0.1:PORT."""

    endpoint: str
    project: str = "test-project"
    _buckets: dict = field(default_factory=dict)

    def client(self):
        """A google-cloud-storage client that talks to the emulator without credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def bucket(self, name: str):
        """The bucket called name, created on first use."""
        if name not in self._buckets:
            client = self.client()
            existing = client.lookup_bucket(name)
            self._buckets[name] = existing or client.create_bucket(name)
        return self._buckets[name]

    def upload_bytes(self, bucket: str, name: str, data: bytes) -> str:
        self.bucket(bucket).blob(name).upload_from_string(data)
        return f"gs://{bucket}/{name}"

    def upload_directory(self, local_dir: Path, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file below local_dir under prefix; returns the gs:// URIs."""
        return [
            self.upload_bytes(bucket, _object_name(prefix, relative), path.read_bytes())
            for path, relative in local_files(local_dir)
        ]

    def beam_options(self) -> list[str]:
        """Pipeline options for Beam's gs:// filesystem against the emulator.

        Beam has no endpoint option for GCS: the endpoint comes from
        STORAGE_EMULATOR_HOST and credentials from the dummy credentials file (see
        `env`), both set by the fixture and inherited by worker processes.
        `--no_auth` is harmless but, in Beam 2.77, does not stop gs:// IO from
        looking for credentials.
        """
        return ["--no_auth", f"--project={self.project}"]

    def env(self, credentials_file: Path) -> dict[str, str]:
        """What Beam's gs:// filesystem (here and in worker processes) needs to reach the emulator.

        Beam's GCS client ignores `--no_auth` and asks google.auth for default
        credentials, retrying for about 22 s per process when there are none. A
        credentials file holding a never-expiring dummy token answers at once and
        is never refreshed, so nothing leaves the machine; NO_GCE_CHECK stops
        google.auth from probing the GCE metadata server.
        """
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials_file),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "NO_GCE_CHECK": "true",
        }


def write_dummy_gcp_credentials(directory: Path) -> Path:
    """An authorized-user credentials file whose token never expires (see GcsEmulator.env)."""
    path = Path(directory) / "emulator_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "emulator",
                "client_secret": "emulator",
                "refresh_token": "emulator",
                "token": "emulator-token",
                "expiry": "2999-01-01T00:00:00Z",
            }
        )
    )
    return path


@dataclass
class S3Server:
    """Handle on a running moto S3 server; `endpoint` is http://127.0.0.1:PORT."""

    endpoint: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    _client: Any = None
    _buckets: set = field(default_factory=set)

    def client(self):
        """A boto3 S3 client for this server (built once: building one takes a fraction of a second)."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
            )
        return self._client

    def create_bucket(self, name: str) -> str:
        """Create the bucket if it does not exist yet; returns its s3:// root."""
        if name not in self._buckets:
            client = self.client()
            existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
            if name not in existing:
                client.create_bucket(Bucket=name)
            self._buckets.add(name)
        return f"s3://{name}"

    def upload_bytes(self, bucket: str, name: str, data: bytes) -> str:
        self.create_bucket(bucket)
        self.client().put_object(Bucket=bucket, Key=name, Body=data)
        return f"s3://{bucket}/{name}"

    def upload_directory(self, local_dir: Path, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file below local_dir under prefix; returns the s3:// URIs."""
        return [
            self.upload_bytes(bucket, _object_name(prefix, relative), path.read_bytes())
            for path, relative in local_files(local_dir)
        ]

    def beam_options(self) -> list[str]:
        """Pipeline options for Beam's s3:// filesystem against this server."""
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={self.access_key_id}",
            f"--s3_secret_access_key={self.secret_access_key}",
            f"--s3_region_name={self.region}",
        ]

    def env(self) -> dict[str, str]:
        """What boto3 reads when no explicit configuration is given (boto3 >= 1.28)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """An in-memory GCS emulator on loopback, with STORAGE_EMULATOR_HOST pointing at it."""
    from gcp_storage_emulator.server import create_server

    port = free_loopback_port()
    server = create_server(LOOPBACK, port, in_memory=True)
    server.start()
    handle = GcsEmulator(endpoint=f"http://{LOOPBACK}:{port}")
    credentials = write_dummy_gcp_credentials(tmp_path_factory.mktemp("gcs_emulator"))
    try:
        with environment(handle.env(credentials)):
            yield handle
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback, with AWS_* variables pointing boto3 at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    handle = S3Server(endpoint=f"http://{host}:{port}")
    try:
        with environment(handle.env()):
            yield handle
    finally:
        server.stop()


__all__ = [
    "GcsEmulator",
    "S3Server",
    "environment",
    "free_loopback_port",
    "gcs_emulator",
    "local_files",
    "s3_server",
    "write_dummy_gcp_credentials",
]
