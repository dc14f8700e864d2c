"""Step 0: load and check everything a build reads, before any training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from encoders import model_config
from index_builder.build.settings import BuildSettings
from index_builder.embeddings_io import EmbeddingsError, EmbeddingSet, load_embeddings
from index_builder.searcher_models import SearcherModelError, embedding_dim_of
from index_builder.tuning_queries import TuningQueriesError, read_query_texts
from transforms.catalog import uris
from transforms.embedding.model_staging import stage_model_dir


class BuildInputError(ValueError):
    """An input the build cannot use; the message names the flag and what to fix."""


@dataclass(frozen=True)
class BuildInputs:
    embeddings: EmbeddingSet
    model_dir: Path  # local copy of --model_dir
    config: model_config.ModelConfig
    tuning_texts: tuple[str, ...]


def load_inputs(settings: BuildSettings) -> BuildInputs:
    try:
        local_model = stage_model_dir(settings.model_dir)
        config = model_config.validate_model_dir(local_model)
    except model_config.ModelDirError as error:
        raise BuildInputError(f"--model_dir: {error}") from error
    try:
        embeddings = load_embeddings(
            settings.embeddings,
            extra_columns=settings.extra_columns(),
            spill_from_rows=settings.spill_embeddings_from_rows(),
        )
    except EmbeddingsError as error:
        raise BuildInputError(f"--embeddings: {error}") from error
    # Any non-empty catalog builds (load_embeddings refuses zero rows); below 256 rows no AH codebook can be
    # trained, so both indexes are brute force (index_builder/build/brute_force.py).
    check_model_matches(embeddings, local_model, config)
    if settings.tuning_queries and not config.has_text_encoder:
        raise BuildInputError(
            f"--tuning_queries needs a text encoder, but model {config.model_id!r} is image-only "
            "(has_text_encoder is false): drop the flag to tune on held-out database rows"
        )
    return BuildInputs(embeddings, local_model, config, read_tuning_texts(settings.tuning_queries))


def check_model_matches(embeddings: EmbeddingSet, local_model: Path, config: model_config.ModelConfig) -> None:
    """Text queries only land near their images when both came from the same model."""
    encoders = [model_config.IMAGE_TFLITE_FILE] + ([model_config.TEXT_TFLITE_FILE] if config.has_text_encoder else [])
    for name in encoders:
        try:
            dim = embedding_dim_of((local_model / name).read_bytes(), str(local_model / name))
        except SearcherModelError as error:
            raise BuildInputError(str(error)) from error
        if dim != embeddings.dim:
            raise BuildInputError(
                f"{local_model / name} outputs {dim}-d embeddings but {embeddings.files[0]} holds "
                f"{embeddings.dim}-d vectors: pass the --model_dir that produced the embeddings"
            )
    if embeddings.model_id != config.model_id:
        raise BuildInputError(
            f"{embeddings.files[0]} was embedded with model_id {embeddings.model_id!r} but --model_dir is "
            f"{config.model_id!r}: text queries would land in a different embedding space"
        )


def read_tuning_texts(path: str | None) -> tuple[str, ...]:
    if not path:
        return ()
    try:
        return tuple(read_query_texts(uris.absolutize_local(path)))
    except TuningQueriesError as error:
        raise BuildInputError(f"--tuning_queries: {error}") from error
