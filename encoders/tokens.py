"""Caption tokenization constants shared by training, export and the on-device model.

The on-device text encoder is fed by the Task Library's RegexTokenizer, so the
training-side tokenization (encoders.text_transform) must reproduce it exactly:
same delimiter regex, same reserved tokens at the same ids, same padding.
"""

from __future__ import annotations

PAD = "<PAD>"
START = "<START>"
UNKNOWN = "<UNKNOWN>"
RESERVED_TOKENS: tuple[str, ...] = (PAD, START, UNKNOWN)
PAD_ID, START_ID, UNKNOWN_ID = 0, 1, 2

# tflite-support's default delimiter: anything that is not a word character or apostrophe.
DELIM_REGEX = r"[^\w\']+"
MAX_LEN = 32
