"""Everything a build needs to know, as one frozen object made once from the job's flags."""

from __future__ import annotations

from dataclasses import dataclass

from index_builder.scann_index import IndexParams
from index_builder.tuning import TuningOptions

# On-device AH code sizes tuning tries when --ondevice_dims_per_block is not given, coarsest first:
# D/2 bytes per item, then D bytes (the code size sets the on-device recall ceiling: on 250K clustered
# 128-d rows with float lookup tables, 64-byte codes top out at 0.905, 128-byte codes reach 0.96
# searching 100 of 500 leaves; docs/BENCHMARKS.md).
ONDEVICE_DIMS_PER_BLOCK_CANDIDATES = (2, 1)
# --server_build auto: from this many rows the server index is trained on the sample and assembled from
# Beam-encoded rows (index_builder/build/server_beam.py), so the launcher's memory stops growing with N:
# ScaNN's in-process build holds every row twice (about 2.3 GB per 1M rows at D=128). At 1M on this 2-core
# machine the whole build takes about as long either way (docs/BENCHMARKS.md "Both 1M targets on the Beam
# path"), with the launcher under 2 GB only on the Beam path; below 1M the in-process build is faster.
SERVER_BEAM_FROM_ROWS = 1_000_000


@dataclass(frozen=True)
class BuildSettings:
    embeddings: str
    output_dir: str
    model_dir: str | None = None
    seed: int = 0
    target_recall: float = 0.95
    num_leaves: int | None = None
    num_leaves_to_search: int | None = None
    reorder: int | None = None
    dims_per_block: int = 2
    training_sample_size: int = 250_000
    eval_queries: int = 1000
    tuning_queries: str | None = None
    ondevice_target_recall: float = 0.9
    ondevice_num_leaves: int | None = None
    ondevice_num_leaves_to_search: int | None = None
    ondevice_dims_per_block: int | None = None  # None: tuning picks from ONDEVICE_DIMS_PER_BLOCK_CANDIDATES
    ondevice_lookup: str = "FLOAT"
    ondevice_encoding: str = "auto"
    server_build: str = "auto"  # in_process | beam | auto (beam from SERVER_BEAM_FROM_ROWS rows)
    metadata_columns: tuple[str, ...] = ("uri",)
    # Where Beam workers write per-partition files (None: a local temporary folder).
    temp_location: str | None = None
    # Last night's index directory: update it instead of retraining when the model is unchanged.
    previous_index: str | None = None
    retrain_every: int = 7  # nights between full retrains when updating
    # A missed recall target makes the job exit non-zero (after writing the index).
    require_targets: bool = False

    def server_params(self) -> IndexParams:
        return IndexParams(
            num_leaves=self.num_leaves,
            num_leaves_to_search=self.num_leaves_to_search,
            reorder=self.reorder,
            dims_per_block=self.dims_per_block,
            training_sample_size=self.training_sample_size,
            seed=self.seed,
        )

    def ondevice_params(self) -> IndexParams:
        return IndexParams(
            num_leaves=self.ondevice_num_leaves,
            num_leaves_to_search=self.ondevice_num_leaves_to_search,
            dims_per_block=self.ondevice_dims_per_block or ONDEVICE_DIMS_PER_BLOCK_CANDIDATES[0],
            training_sample_size=self.training_sample_size,
            seed=self.seed,
            for_ondevice=True,
            ondevice_lookup=self.ondevice_lookup,
        )

    def server_tuning(self) -> TuningOptions:
        return TuningOptions(target_recall=self.target_recall, seed=self.seed)

    def ondevice_tuning(self) -> TuningOptions:
        candidates = () if self.ondevice_dims_per_block else ONDEVICE_DIMS_PER_BLOCK_CANDIDATES
        return TuningOptions(
            target_recall=self.ondevice_target_recall, seed=self.seed, dims_per_block_candidates=candidates
        )

    def encodes_ondevice_in_beam(self, num_rows: int) -> bool:
        """Beam workers encode when asked, or (auto) when the rows outnumber the training sample."""
        if self.ondevice_encoding == "auto":
            return num_rows > self.training_sample_size
        return self.ondevice_encoding == "beam"

    def builds_server_in_beam(self, num_rows: int) -> bool:
        """Beam workers encode the server index's rows when asked, or (auto) from SERVER_BEAM_FROM_ROWS rows."""
        if self.server_build == "auto":
            return num_rows >= SERVER_BEAM_FROM_ROWS
        return self.server_build == "beam"

    def spill_embeddings_from_rows(self) -> int | None:
        """Rows from which the loaded embeddings stay in a memory-mapped file rather than in RAM: whenever
        the server index is assembled from Beam outputs, the launcher only streams over them."""
        if self.server_build == "in_process":
            return None
        return SERVER_BEAM_FROM_ROWS if self.server_build == "auto" else 0

    def extra_columns(self) -> list[str]:
        """Metadata columns read from the shards besides id and uri."""
        return [c for c in self.metadata_columns if c not in ("id", "uri")]
