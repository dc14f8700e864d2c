"""Beam stages that turn a catalog into embedding shards: catalog input, embedding, outputs."""
