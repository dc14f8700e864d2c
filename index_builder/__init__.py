"""Embeddings to indexes: the ScaNN server index, the on-device index file, Task Library searchers, evaluation."""
