"""Where a job's per-input outputs go: a local (or shared) folder, or an fsspec URL (``s3://bucket/out/``,
``gs://``, ``file://``...), written through a local copy: an output is made here, then uploaded under its
temporary name and moved to its final name, so that a reader of the bucket never takes half a file for a
whole one. A URL's scheme needs fsspec's package for it (s3fs for ``s3://``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .exceptions import ConfigError, SinkError

__all__ = ["append_line", "exists", "is_url", "join", "publish"]


def is_url(path: str) -> bool:
    return "://" in path


def join(folder: str, name: str) -> str:
    """``folder/name``; a URL keeps its ``//``."""
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else str(Path(folder) / name)


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec

        return fsspec.url_to_fs(url)
    except ImportError as exc:  # fsspec itself, or the package of this scheme (s3fs, gcsfs...)
        raise ConfigError(f"{url.split('://')[0]}:// outputs need a package: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"cannot write to {url}: {exc}") from None


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, where = _fs(path)
    return fs.exists(where)


def publish(local: str, target: str, partial: str) -> None:
    """Put a finished local file at ``target``: renamed where ``target`` is local, else uploaded to
    ``partial`` and moved to ``target`` once whole.

    Raises:
        SinkError: the upload failed.
    """
    if not is_url(target):
        os.replace(local, target)
        return
    fs, where = _fs(target)
    _, temporary = _fs(partial)
    try:
        fs.makedirs(where.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(local, temporary)
        fs.mv(temporary, where)
    except OSError as exc:
        raise SinkError(f"cannot upload to {target}: {exc}") from exc
    os.remove(local)


def append_line(path: str, line: str) -> None:
    """Add a line to a text file; a URL's file is read and written whole (object stores do not append)."""
    if not is_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return
    fs, where = _fs(path)
    before = fs.cat_file(where) if fs.exists(where) else b""
    fs.makedirs(where.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(where, before + (line + "\n").encode())
