"""TFLite Metadata writer/reader so our encoders load in the TFLite Task Library.

tflite-support cannot be a dependency (protobuf<4 vs TF 2.21), so the metadata
flatbuffer, the model surgery and the associated-files zip are implemented here.
"""

from __future__ import annotations

from encoders.tflite_metadata.associated_files import read_associated_files
from encoders.tflite_metadata.classifiers import LABELS_FILE_NAME, add_image_classifier_metadata
from encoders.tflite_metadata.embedders import (
    INDEX_FILE_NAME,
    VOCAB_FILE_NAME,
    add_bert_text_embedder_metadata,
    add_image_embedder_metadata,
    add_text_embedder_metadata,
    attach_scann_index,
    read_metadata,
    write_searcher,
)
from encoders.tflite_metadata.populate import populate
from encoders.tflite_metadata.regex_tokenizer import DEFAULT_DELIM_REGEX, tokenize_like_task_library

__all__ = [
    "DEFAULT_DELIM_REGEX",
    "INDEX_FILE_NAME",
    "LABELS_FILE_NAME",
    "VOCAB_FILE_NAME",
    "add_bert_text_embedder_metadata",
    "add_image_classifier_metadata",
    "add_image_embedder_metadata",
    "add_text_embedder_metadata",
    "attach_scann_index",
    "populate",
    "read_associated_files",
    "read_metadata",
    "tokenize_like_task_library",
    "write_searcher",
]
