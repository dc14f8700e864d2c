"""On-device searcher models: an encoder .tflite with the ScaNN index attached.

The Task Library's TextSearcher / ImageSearcher find the index as the
SCANN_INDEX_FILE associated file of the embedding output tensor, so packaging
is metadata surgery on the encoder the model directory already ships.
"""

from __future__ import annotations

from pathlib import Path

from encoders.tflite_metadata import attach_scann_index, read_metadata, write_searcher
from encoders.tflite_metadata.model_buffer import model_io


class SearcherModelError(ValueError):
    pass


def embedding_dim_of(model: bytes, source: str) -> int:
    _, outputs = model_io(model)
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise SearcherModelError(f"{source}: expected one [1, D] embedding output, found {[o.shape for o in outputs]}")
    return int(outputs[0].shape[-1])


def build_searcher_model(encoder_path: Path, index_bytes: bytes, expected_dim: int) -> bytes:
    """Returns the encoder with the index attached; refuses an encoder of another dimension."""
    return attach_scann_index(_searcher_encoder(encoder_path, expected_dim), index_bytes)


def write_searcher_model(encoder_path: Path, index_file: Path, expected_dim: int, out: Path) -> None:
    """``build_searcher_model`` written to ``out`` with the index copied from ``index_file`` in chunks
    (same bytes): the launcher never holds the index, which grows with the catalog."""
    write_searcher(_searcher_encoder(encoder_path, expected_dim), index_file, out)


def _searcher_encoder(encoder_path: Path, expected_dim: int) -> bytes:
    """The encoder's bytes, if it can carry an index of ``expected_dim``-d vectors."""
    model = encoder_path.read_bytes()
    dim = embedding_dim_of(model, str(encoder_path))
    if dim != expected_dim:
        raise SearcherModelError(
            f"{encoder_path} outputs {dim}-d embeddings but the index holds {expected_dim}-d vectors: "
            "use the model directory that produced the embeddings (--model_dir)"
        )
    read_metadata(model)  # an encoder without Task Library metadata cannot become a searcher
    return model
