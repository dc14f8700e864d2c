"""Pure-Python twin of the Task Library's BERT input path (tflite-support 0.4.4, WordPiece).

What the C++ code does (cc/task/processor/bert_preprocessor.cc, cc/text/tokenizers/
bert_tokenizer.{h,cc}, tensorflow_text's wordpiece_tokenizer.cc, cc/utils/common_utils.cc):
- The text is ASCII-lower-cased (absl::AsciiStrToLower: "É" stays "É").
- Splitting (RegexSplit): runs of whitespace are dropped; every punctuation character
  (the ASCII ranges !-/ :-@ [-` {-~ and Unicode category P*) and CJK ideograph is a token
  of its own; the text between them is a word.
- WordPiece per word: greedy longest match from the left, continuation pieces prefixed
  "##"; a word with an unmatched position, or longer than 100 bytes, becomes one "[UNK]".
- Ids: "[CLS]", the first max_seq_len - 2 pieces, "[SEP]", then 0s; a token missing from the
  vocab (e.g. "[CLS]" itself) keeps id 0. mask is 1 on those positions, segment_ids all 0.
- Vocab file: one token per line, empty lines skipped, id = index among the kept lines
  (a later duplicate wins).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

CLS, SEP, UNKNOWN, PAD = "[CLS]", "[SEP]", "[UNK]", "[PAD]"
SUFFIX_INDICATOR = "##"
MAX_BYTES_PER_TOKEN = 100
MAX_CHARS_PER_SUBTOKEN = 100
REQUIRED_TOKENS = (CLS, SEP, UNKNOWN)
_WHITESPACE = " \t\n\f\r"  # RE2's \s
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def wordpiece_vocab_file_bytes(tokens: Sequence[str]) -> bytes:
    """One token per line (id = line number); refuses what the line format cannot hold."""
    seen: set[str] = set()
    for token in tokens:
        if not token or "\n" in token or "\r" in token:
            raise ValueError(f"WordPiece vocab token {token!r} is empty or contains a line break")
        if token in seen:
            raise ValueError(f"duplicate WordPiece vocab token {token!r}: ids are line numbers")
        seen.add(token)
    missing = [token for token in REQUIRED_TOKENS if token not in seen]
    if missing:
        raise ValueError(f"WordPiece vocab lacks {missing}: the Task Library's BERT input needs them")
    return "".join(f"{token}\n" for token in tokens).encode("utf-8")


def parse_wordpiece_vocab(content: bytes) -> dict[str, int]:
    """Reads a WordPiece vocab file the way the Task Library does."""
    lines = [line for line in content.decode("utf-8").split("\n") if line]
    return {token: index for index, token in enumerate(lines)}


def _is_split_character(character: str) -> bool:
    code = ord(character)
    if code < 128:
        return not character.isalnum() and 0x21 <= code <= 0x7E
    return unicodedata.category(character).startswith("P") or any(low <= code <= high for low, high in _CJK_RANGES)


def split_like_bert_tokenizer(text: str) -> list[str]:
    """Words and single punctuation / CJK characters, whitespace dropped (before WordPiece)."""
    tokens: list[str] = []
    word: list[str] = []
    for character in text:
        if character in _WHITESPACE or _is_split_character(character):
            if word:
                tokens.append("".join(word))
                word = []
            if character not in _WHITESPACE:
                tokens.append(character)
        else:
            word.append(character)
    if word:
        tokens.append("".join(word))
    return tokens


def wordpiece(word: str, vocab: Mapping[str, int]) -> list[str]:
    """Greedy longest-match-first pieces of one word, or [UNKNOWN]."""
    if len(word.encode("utf-8")) > MAX_BYTES_PER_TOKEN:
        return [UNKNOWN]
    pieces, start = [], 0
    while start < len(word):
        for end in range(min(len(word), start + MAX_CHARS_PER_SUBTOKEN), start, -1):
            piece = word[start:end] if start == 0 else SUFFIX_INDICATOR + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return [UNKNOWN]
    return pieces


def bert_inputs_like_task_library(
    text: str, vocab: Mapping[str, int], max_seq_len: int
) -> tuple[list[int], list[int], list[int]]:
    """(ids, mask, segment_ids) exactly as the Task Library fills the three [1, max_seq_len] inputs."""
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be at least 2 ([CLS] and [SEP]), got {max_seq_len}")
    lowered = "".join(c.lower() if c.isascii() else c for c in text)
    pieces = [piece for word in split_like_bert_tokenizer(lowered) for piece in wordpiece(word, vocab)]
    tokens = [CLS, *pieces[: max_seq_len - 2], SEP]
    ids = [vocab.get(token, 0) for token in tokens] + [0] * (max_seq_len - len(tokens))
    mask = [1] * len(tokens) + [0] * (max_seq_len - len(tokens))
    return ids, mask, [0] * max_seq_len
