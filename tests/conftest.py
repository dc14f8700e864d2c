"""Shared pytest fixtures."""

from __future__ import annotations

# Real object-storage servers on loopback (GCS emulator, moto S3) as session fixtures.
from tests.storage_servers import gcs_emulator, s3_server  # noqa: F401
