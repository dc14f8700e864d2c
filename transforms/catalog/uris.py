"""URI and glob helpers shared by listing, manifest reading and byte reading.

Why our own glob semantics: Beam translates `**` to `.*`, so on every filesystem
`images/**/*.jpg` needs at least one folder between `images/` and the file and
misses `images/top.jpg`. Users expect the shell's globstar meaning (`**/`
matches zero or more folders), so patterns are matched here with that meaning
while Beam only does the listing.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

REMOTE_SCHEMES = ("gs", "s3")
_GLOB_CHARS = "*?["
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme_of(uri: str) -> str:
    """The URI scheme ('gs', 's3', ...) or '' for a local path."""
    found = _SCHEME_RE.match(uri)
    return found.group(1).lower() if found else ""


def is_local(uri: str) -> bool:
    return scheme_of(uri) in ("", "file")


def is_gcs(uri: str) -> bool:
    return scheme_of(uri) == "gs"


def strip_file_scheme(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def absolutize_local(path: str, base_dir: str | None = None) -> str:
    """Make a local path or pattern absolute; remote URIs pass through unchanged.

    Workers may run elsewhere or in another working directory, so local paths
    are pinned down in the launcher. A trailing slash is kept (it means "the
    files directly in this folder").
    """
    if not is_local(path):
        return path
    path = os.path.expanduser(strip_file_scheme(path))
    if not os.path.isabs(path):
        path = os.path.join(base_dir or os.getcwd(), path)
    normalized = os.path.normpath(path)
    return normalized + os.sep if path.endswith(os.sep) and normalized != os.sep else normalized


def resolve_against(uri: str, base_dir: str) -> str:
    """Resolve a manifest entry against the manifest's folder if it is a relative local path."""
    if not is_local(uri) or os.path.isabs(strip_file_scheme(uri)):
        return absolutize_local(uri) if is_local(uri) else uri
    if is_local(base_dir):
        return absolutize_local(uri, base_dir)
    return base_dir.rstrip("/") + "/" + uri


def dirname(uri: str) -> str:
    """The folder part of a local path or remote URI (keeps the scheme)."""
    if is_local(uri):
        return os.path.dirname(absolutize_local(uri))
    return uri.rsplit("/", 1)[0]


def has_glob(pattern: str) -> bool:
    return any(char in pattern for char in _GLOB_CHARS)


def literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first glob character: what to list under."""
    cut = min((pattern.find(char) for char in _GLOB_CHARS if char in pattern), default=len(pattern))
    return pattern[:cut]


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob with globstar semantics into a regex matching whole URIs.

    `*` and `?` never cross a `/`; `**/` matches zero or more folders; a `**`
    not followed by `/` matches anything, slashes included; `[...]` and `[!...]`
    are character classes.
    """
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif char == "*":
            parts.append("[^/]*")
            i += 1
        elif char == "?":
            parts.append("[^/]")
            i += 1
        elif char == "[":
            body_start = i + 1
            if pattern[body_start : body_start + 1] == "!":
                body_start += 1
            if pattern[body_start : body_start + 1] == "]":
                body_start += 1  # a leading ']' is a literal member of the class
            end = pattern.find("]", body_start)
            if end == -1:
                parts.append(re.escape(char))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            parts.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            parts.append(re.escape(char))
            i += 1
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def listing_pattern(pattern: str) -> str:
    """A Beam pattern that lists everything `pattern` could match, recursively.

    Beam's match lists by prefix (object stores) or walks the folder (local
    disk) and then filters; `prefix + '**'` keeps every object under the prefix,
    which `glob_regex` then filters with globstar semantics.
    """
    return literal_prefix(pattern) + "**"


def is_directory_entry(uri: str) -> bool:
    """Folder placeholders: object stores list them as empty objects named `.../`."""
    if uri.endswith("/"):
        return True
    return is_local(uri) and os.path.isdir(strip_file_scheme(uri))
