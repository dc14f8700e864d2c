"""Query embeddings exactly as the device computes them, from the searcher .tflite files.

The search CLI reads the tokenizer settings (RegexTokenizer, or BertTokenizer
WordPiece), vocabulary and normalization out of the model's own TFLite
metadata and runs the same flatbuffer, so a query answered here is the query a
phone would answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoders.tflite_metadata import read_associated_files, read_metadata
from encoders.tflite_metadata.bert_tokenizer import bert_inputs_like_task_library, parse_wordpiece_vocab
from encoders.tflite_metadata.embedders import BERT_INPUT_NAMES
from encoders.tflite_metadata.regex_tokenizer import parse_vocab_file, tokenize_like_task_library
from encoders.tflite_metadata.schema import (
    BertTokenizerOptions,
    NormalizationOptions,
    RegexTokenizerOptions,
    SentencePieceTokenizerOptions,
)
from encoders.tflite_runtime import open_interpreter
from images.decoding import decode_image, resize_for_model


def _interpreter(model: bytes):
    return open_interpreter(model)


def _run(interpreter, inputs: np.ndarray) -> np.ndarray:
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(source["index"], inputs[None].astype(source["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(target["index"])[0].astype(np.float32)


def _l2_normalize(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class TextQueryEncoder:
    """Text -> embedding for RegexTokenizer models (one int32 input) and BERT models (BertTokenizer /
    WordPiece: ids, mask, segment_ids). SentencePiece models are refused: no twin of that tokenizer here."""

    def __init__(self, model_path: Path) -> None:
        model = Path(model_path).read_bytes()
        subgraph = read_metadata(model).subgraph_metadata[0]
        files = read_associated_files(model)
        self._interpreter = _interpreter(model)
        inputs = self._interpreter.get_input_details()
        self._max_len = int(inputs[0]["shape"][1])
        self._bert_roles: list[str] | None = None
        unit = next((u.options for u in subgraph.input_process_units), None)
        if isinstance(unit, SentencePieceTokenizerOptions):
            raise ValueError(
                f"{model_path}: SentencePiece tokenizer metadata; the query encoder only reproduces the "
                "RegexTokenizer and BertTokenizer (WordPiece) inputs of the Task Library"
            )
        if isinstance(unit, BertTokenizerOptions):
            # Metadata tensor i describes model input i; its name says which BERT input it is.
            self._bert_roles = [t.name or "" for t in subgraph.input_tensor_metadata]
            if sorted(self._bert_roles) != sorted(BERT_INPUT_NAMES):
                raise ValueError(
                    f"{model_path}: BERT input tensors are named {self._bert_roles}, expected {BERT_INPUT_NAMES}"
                )
            self._vocab = parse_wordpiece_vocab(files[unit.vocab_file[0].name])
            return
        tensor = subgraph.input_tensor_metadata[0]
        options = next((u.options for u in tensor.process_units if isinstance(u.options, RegexTokenizerOptions)), None)
        if options is None or len(inputs) != 1:
            raise ValueError(f"{model_path}: no RegexTokenizer or BertTokenizer metadata for the text input(s)")
        self._delim = options.delim_regex_pattern
        self._vocab = parse_vocab_file(files[options.vocab_file[0].name])

    def token_ids(self, text: str) -> list[int]:
        """The ids input as the Task Library fills it (for BERT: the "ids" tensor)."""
        if self._bert_roles is not None:
            return bert_inputs_like_task_library(text, self._vocab, self._max_len)[0]
        return tokenize_like_task_library(text, self._vocab, self._delim, self._max_len)

    def embed(self, text: str) -> np.ndarray:
        if self._bert_roles is None:
            return _l2_normalize(_run(self._interpreter, np.asarray(self.token_ids(text), np.int32)))
        ids, mask, segment_ids = bert_inputs_like_task_library(text, self._vocab, self._max_len)
        by_role = {"ids": ids, "mask": mask, "segment_ids": segment_ids}
        for detail, role in zip(self._interpreter.get_input_details(), self._bert_roles):
            self._interpreter.set_tensor(detail["index"], np.asarray([by_role[role]], detail["dtype"]))
        self._interpreter.invoke()
        output = self._interpreter.get_output_details()[0]
        return _l2_normalize(self._interpreter.get_tensor(output["index"])[0].astype(np.float32))

    def known_words(self, text: str) -> int:
        """Words of text the vocabulary knows: a query with none has no meaning to search for."""
        special = {self._vocab[t] for t in ("<PAD>", "<START>", "<UNKNOWN>") if t in self._vocab}
        return sum(1 for token in self.token_ids(text) if token not in special)


class ImageQueryEncoder:
    def __init__(self, model_path: Path) -> None:
        model = Path(model_path).read_bytes()
        tensor = read_metadata(model).subgraph_metadata[0].input_tensor_metadata[0]
        normalization = next(
            (u.options for u in tensor.process_units if isinstance(u.options, NormalizationOptions)), None
        )
        self._mean = np.asarray(normalization.mean if normalization else [0.0], np.float32)
        self._std = np.asarray(normalization.std if normalization else [1.0], np.float32)
        self._interpreter = _interpreter(model)
        self._size = int(self._interpreter.get_input_details()[0]["shape"][1])

    def embed_bytes(self, data: bytes, uri: str = "") -> np.ndarray:
        # Squash-resize the whole image, as the Task Library's image preprocessor does.
        rgb = resize_for_model(decode_image(data, uri=uri, target_size=self._size).rgb, self._size)
        pixels = (rgb.astype(np.float32) - self._mean) / self._std
        return _l2_normalize(_run(self._interpreter, pixels))
