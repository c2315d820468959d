"""Finding a job's input files: a file, a folder or S3 prefix, a glob, or a list of those.

A folder or prefix stands for every visible file of a known format under it, at any depth
(names beginning with ``.`` or ``_`` are skipped, as Spark's and pyarrow's readers skip
``_SUCCESS`` and files being written). A glob matches paths relative to the folder before its
first wildcard: ``*`` and ``?`` within one path segment, ``**`` across any number of them,
``[abc]`` as in the shell. A format comes from the extension unless the job names one; text
compressed as a whole (``.csv.gz``) is not read, since its chunks are byte ranges.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.jobs.files.errors import InputNotFound, InvalidLocation, TooManyInputs
from gateway.jobs.files.storage import (
    Located,
    S3Object,
    locate,
    read_failure,
    s3_client,
    size_of,
    uri_of,
    walk,
    within,
)

FORMATS = ("parquet", "csv", "jsonl")
EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_WILDCARDS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    uri: str  # "file:///abs/path" or "s3://bucket/key"
    size: int
    format: str  # one of FORMATS

    def to_json(self) -> dict[str, object]:
        return {"uri": self.uri, "size": self.size, "format": self.format}


def format_of(name: str) -> str | None:
    """The format a file's extension names, or None."""
    return EXTENSIONS.get(Path(name).suffix.lower())


def checked_format(format: str | None) -> str | None:
    if format is not None and format not in FORMATS:
        raise InvalidLocation(format, f"not a format of job files (one of {', '.join(FORMATS)})")
    return format


def glob_pattern(glob: str) -> re.Pattern[str]:
    """A glob (relative, with ``/``) as a regular expression over relative paths."""
    out: list[str] = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if glob.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if glob.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in glob[index + 2 :]:
            close = glob.index("]", index + 2)
            inside = glob[index + 1 : close]
            inside = "^" + inside[1:] if inside.startswith("!") else inside
            out.append(f"[{inside.replace(chr(92), chr(92) * 2)}]")
            index = close + 1
            continue
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out) + r"\Z")


def _split_glob(where: Located) -> tuple[Located, str] | None:
    """(the folder or prefix before the first wildcard, the glob under it), or None."""
    text = where.key if isinstance(where, S3Object) else str(where)
    if not _WILDCARDS.search(text):
        return None
    segments = text.split("/")
    first = next(i for i, segment in enumerate(segments) if _WILDCARDS.search(segment))
    base, glob = "/".join(segments[:first]), "/".join(segments[first:])
    if isinstance(where, S3Object):
        return S3Object(where.bucket, base), glob
    return Path(base or "/"), glob


_OUTSIDE = "outside the folders and S3 prefixes jobs may use"


def _matches(item: str, format: str | None, client: Any, roots: Sequence[str] | None) -> list[InputFile]:
    where = locate(item)
    split = _split_glob(where)
    if not within(split[0] if split is not None else where, roots):
        raise InvalidLocation(item, _OUTSIDE)
    if split is not None:
        base, glob = split
        pattern = glob_pattern(glob)
        # Without ``**`` nothing deeper than the glob's own segments can match: don't walk it.
        depth = None if "**" in glob else glob.count("/") + 1
        return _listed(base, format, client, keep=lambda relative: bool(pattern.match(relative)), depth=depth)
    single = _single(where, item, format, client)
    if single is not None:
        return [single]
    return _listed(where, format, client, keep=lambda relative: True)


def _single(where: Located, item: str, format: str | None, client: Any) -> InputFile | None:
    """The file ``where`` names, or None if it names no file (maybe a folder or prefix)."""
    name = where.key if isinstance(where, S3Object) else str(where)
    if isinstance(where, Path):
        if not where.is_file():
            return None
        size = where.stat().st_size
    else:
        if not where.key or where.key.endswith("/"):
            return None
        try:
            size = size_of(where, client)
        except Exception as exc:
            failure = read_failure(item, exc, format=format or "input", range="")
            if isinstance(failure, InputNotFound):
                return None
            raise failure from exc
    found = format or format_of(name)
    if found is None:
        raise InvalidLocation(
            item, f"the format is not known from the extension (one of {', '.join(EXTENSIONS)}); name it"
        )
    return InputFile(uri_of(where), size, found)


def _listed(
    base: Located, format: str | None, client: Any, *, keep: Callable[[str], bool], depth: int | None = None
) -> list[InputFile]:
    found: list[InputFile] = []
    try:
        for where, relative, size in walk(base, client, depth=depth):
            kind = format or format_of(relative)
            if kind is not None and keep(relative):
                found.append(InputFile(uri_of(where), size, kind))
    except Exception as exc:
        raise read_failure(uri_of(base), exc, format=format or "input", range="") from exc
    return found


def find_inputs(
    spec: str | list[str], *, format: str | None = None, max_files: int, roots: Sequence[str] | None = None
) -> list[InputFile]:
    """Every input file ``spec`` names (see the module's doc), sorted by URI, each once.
    Raises InputNotFound when an item matches nothing, TooManyInputs past ``max_files``,
    InvalidLocation for a URI or format that cannot be read, or a location outside ``roots``
    (folders and S3 prefixes; None: anywhere the process's credentials reach)."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise InvalidLocation("[]", "names no input")
    format = checked_format(format)
    client = s3_client() if any(item.lower().startswith("s3://") for item in items) else None
    files: dict[str, InputFile] = {}
    for item in items:
        matched = _matches(item, format, client, roots)
        if not matched:
            raise InputNotFound(item)
        for file in matched:
            if not within(locate(file.uri), roots):  # a link out of a root
                raise InvalidLocation(file.uri, _OUTSIDE)
        for file in matched:
            files[file.uri] = file
        if len(files) > max_files:
            raise TooManyInputs(str(item), found=len(files), limit=max_files)
    return [files[uri] for uri in sorted(files)]
