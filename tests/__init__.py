"""The test suite; its folders mirror the packages they test."""

from pathlib import Path

# The repository root: subprocess tests run jobs from here.
ROOT = Path(__file__).resolve().parents[1]
