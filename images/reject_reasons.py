"""Why an input was rejected: a closed set of machine-readable error types.

Every input of the embedding job ends up either embedded or in `rejected/` with
one of these `error_type` values, so run summaries can count rejections by
cause and users can filter them without parsing free-text messages.
"""

from __future__ import annotations

# Decoding stage (images.decoding).
EMPTY = "empty"
TOO_LARGE = "too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
UNDECODABLE = "undecodable"
# Reading stage (transforms.catalog.reading): reserved here so the set stays closed in one place.
NOT_FOUND = "not_found"
READ_ERROR = "read_error"
# Listing/reading: a FIFO, socket or device matched by a pattern; never opened (a FIFO would block forever).
NOT_REGULAR_FILE = "not_regular_file"
# Manifest stage (transforms.catalog.manifest): a row without a usable uri.
INVALID_MANIFEST_ROW = "invalid_manifest_row"
# Manifest stage: the row's id already names another uri (the smallest uri keeps the id).
DUPLICATE_ID = "duplicate_id"
# Encoding stage (transforms.embedding.encoding): the model produced a non-finite or zero vector.
ENCODE_ERROR = "encode_error"

ERROR_TYPES: frozenset[str] = frozenset(
    {
        EMPTY,
        TOO_LARGE,
        UNSUPPORTED_FORMAT,
        UNDECODABLE,
        NOT_FOUND,
        READ_ERROR,
        NOT_REGULAR_FILE,
        INVALID_MANIFEST_ROW,
        DUPLICATE_ID,
        ENCODE_ERROR,
    }
)


class ImageRejected(Exception):
    """An input that cannot be embedded; the job records it and goes on.

    `error_type` is one of ERROR_TYPES; `message` says what is wrong with this
    particular input in words a catalog owner can act on.
    """

    def __init__(self, error_type: str, message: str) -> None:
        if error_type not in ERROR_TYPES:
            raise ValueError(f"unknown error_type {error_type!r}; expected one of {sorted(ERROR_TYPES)}")
        # Passing both to Exception keeps the exception picklable (Beam may ship it between processes).
        super().__init__(error_type, message)
        self.error_type = error_type
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"
