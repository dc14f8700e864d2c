"""Pure-Python twin of the Task Library's RegexTokenizer input path (tflite-support 0.4.4).

What the C++ code does (cc/text/tokenizers/regex_tokenizer.cc and
cc/task/processor/regex_preprocessor.cc):
- Splitting: RE2 FindAndConsume with the delimiter regex wrapped in a group; the text
  between delimiter matches (and after the last one) is a token, empty pieces are
  dropped. RE2's \\w, \\d, \\s are ASCII-only, so e.g. "é" is a delimiter for
  [^\\w\\'] - we use re.ASCII to match.
- No case folding and no other normalization: "Red" and "red" are different tokens.
- Ids: a buffer of max_len (dim 1 of a [1, max_len] input) filled with <PAD>; if the
  vocab has <START>, it goes at position 0; then token ids (unknown -> <UNKNOWN>) until
  the buffer is full, i.e. truncation keeps the first max_len-1 tokens (max_len without
  <START>). Padding is at the end. <PAD> and <UNKNOWN> are mandatory.
- Vocab file: one "token id" per line split on a single space, blank lines skipped, later
  lines win; several tokens may share an id (we use that for case variants).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

PAD = "<PAD>"
START = "<START>"
UNKNOWN = "<UNKNOWN>"
# tflite-support's default delimiter: any run of characters that are not [0-9A-Za-z_'].
DEFAULT_DELIM_REGEX = r"[^\w\']+"


def compile_delimiter(delim_regex: str) -> re.Pattern[str]:
    """Compiles the delimiter with RE2-like ASCII classes; rejects patterns RE2 would loop on."""
    try:
        pattern = re.compile(f"({delim_regex})", re.ASCII)
    except re.error as error:
        raise ValueError(f"invalid delimiter regex {delim_regex!r}: {error}") from error
    if pattern.fullmatch(""):
        raise ValueError(
            f"delimiter regex {delim_regex!r} matches the empty string; the Task Library would never "
            "advance past such a match. Use a pattern that consumes at least one character, e.g. '[^\\w\\']+'"
        )
    return pattern


def split_like_task_library(text: str, delim_regex: str = DEFAULT_DELIM_REGEX) -> list[str]:
    """Splits `text` into the tokens the RegexTokenizer produces (case preserved)."""
    return list(_split(text, compile_delimiter(delim_regex)))


def _split(text: str, delimiter: re.Pattern[str]) -> Iterator[str]:
    last_end = 0
    for match in delimiter.finditer(text):
        if match.start() > last_end:
            yield text[last_end : match.start()]
        last_end = match.end()
    if last_end < len(text):
        yield text[last_end:]


def tokenize_like_task_library(
    text: str, vocab: Mapping[str, int], delim_regex: str = DEFAULT_DELIM_REGEX, max_len: int = 32
) -> list[int]:
    """Returns exactly the int32 ids the Task Library writes into a [1, max_len] input."""
    missing = [token for token in (PAD, UNKNOWN) if token not in vocab]
    if missing:
        raise ValueError(f"vocab lacks {missing}: the Task Library's RegexTokenizer requires <PAD> and <UNKNOWN>")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    ids = [vocab[PAD]] * max_len
    position = 0
    if START in vocab:
        ids[0] = vocab[START]
        position = 1
    for token in _split(text, compile_delimiter(delim_regex)):
        if position >= max_len:
            break
        ids[position] = vocab.get(token, vocab[UNKNOWN])
        position += 1
    return ids


def vocab_from_tokens(tokens: Sequence[str]) -> dict[str, int]:
    """Maps each token to its position (the usual vocab.txt line order)."""
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            raise ValueError(f"duplicate vocab token {token!r} at lines {vocab[token]} and {index}")
        vocab[token] = index
    return vocab


def with_case_variants(vocab: Mapping[str, int]) -> dict[str, int]:
    """Adds Capitalized and UPPER spellings of each token, sharing its id.

    The Task Library never lower-cases, while our training tokenizer does; mapping the
    common spellings to one id makes "Red Circle" and "RED" embed like "red circle".
    Mixed case such as "rEd" still maps to <UNKNOWN>.
    """
    result = dict(vocab)
    for token, token_id in vocab.items():
        if token in (PAD, START, UNKNOWN):
            continue
        for variant in (token[:1].upper() + token[1:], token.upper()):
            result.setdefault(variant, token_id)
    return result


def vocab_file_bytes(vocab: Mapping[str, int]) -> bytes:
    """Serializes a vocab to the "token id" line format the RegexTokenizer loads."""
    lines = []
    for token, token_id in vocab.items():
        if not token or any(ch.isspace() for ch in token):
            raise ValueError(
                f"vocab token {token!r} is empty or contains whitespace; the vocab file format cannot hold it"
            )
        if not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"vocab id for {token!r} must be a non-negative int, got {token_id!r}")
        lines.append(f"{token} {token_id}\n")
    return "".join(lines).encode("utf-8")


def parse_vocab_file(content: bytes) -> dict[str, int]:
    """Reads a vocab file the way the Task Library does (later duplicates win)."""
    vocab: dict[str, int] = {}
    for line in content.decode("utf-8").split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) < 2:
            raise ValueError(f"vocab line {line!r} is not 'token id'")
        vocab[parts[0]] = int(parts[1])
    return vocab
