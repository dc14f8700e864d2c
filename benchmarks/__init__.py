"""Reproducible measurements behind docs/BENCHMARKS.md (make bench); never imported by the product or tests."""
