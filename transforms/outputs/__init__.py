"""Outputs of the embedding job: the Parquet schema, shard writing, run summaries, _SUCCESS markers."""
