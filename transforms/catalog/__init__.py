"""Catalog input: URIs and globs, listing inside the pipeline, manifests, reading bytes with retries."""
