"""Streaming multipart uploads with a hard size limit.

The body is parsed as it arrives (python-multipart); the file part goes to a private temporary
file and the request is refused with UploadTooLarge as soon as more than ``max_bytes`` arrived —
a 2 GB upload never sits in memory or on disk in full.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from nodes.errors import BadUpload, DiskFull, UploadTooLarge

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class ParsedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0

    def cleanup(self) -> None:
        """Remove the temporary file."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def parse_multipart(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    tmp_dir: Path,
    max_bytes: int,
    file_field: str = "file",
) -> ParsedUpload:
    """Parse a multipart/form-data body; raises UploadTooLarge / BadUpload. The caller cleans up."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadUpload("Content-Length is not a number") from None
        if declared > max_bytes:
            raise UploadTooLarge(f"upload of {declared} bytes exceeds the limit of {max_bytes} bytes")
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadUpload("expected a multipart/form-data body with a file part named 'file'")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp_dir, 0o700)
    out = ParsedUpload()
    state: dict[str, object] = {"hname": b"", "hval": b"", "headers": {}, "name": None, "buf": bytearray(), "fh": None}

    def on_part_begin() -> None:
        state["headers"] = {}
        state["name"] = None
        state["buf"] = bytearray()
        state["fh"] = None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] = bytes(state["hname"]) + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hval"] = bytes(state["hval"]) + data[start:end]

    def on_header_end() -> None:
        state["headers"][bytes(state["hname"]).lower()] = bytes(state["hval"])  # type: ignore[index]
        state["hname"], state["hval"] = b"", b""

    def on_headers_finished() -> None:
        disp, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))  # type: ignore[union-attr]
        if disp != b"form-data" or b"name" not in opts:
            raise BadUpload("a multipart part has no form-data name")
        name = opts[b"name"].decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            if out.path is not None:
                raise BadUpload("more than one file part")
            fd, p = tempfile.mkstemp(prefix="upload-", dir=tmp_dir)
            out.path = Path(p)
            out.filename = opts.get(b"filename", b"").decode("utf-8", "replace") or None
            state["fh"] = os.fdopen(fd, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        fh = state["fh"]
        if fh is not None:
            fh.write(data[start:end])  # type: ignore[union-attr]
            out.size += end - start
        else:
            buf: bytearray = state["buf"]  # type: ignore[assignment]
            buf.extend(data[start:end])
            if len(buf) > MAX_FIELD_BYTES:
                raise BadUpload(f"form field {state['name']!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        fh = state["fh"]
        if fh is not None:
            fh.close()  # type: ignore[union-attr]
            state["fh"] = None
        elif state["name"] is not None:
            out.fields[str(state["name"])] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes (refused while streaming)")
            try:
                parser.write(chunk)
            except (BadUpload, UploadTooLarge):
                raise
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull(f"the node's disk is full: the upload stopped after {received} bytes "
                                   "and was removed") from None
                raise
            except Exception as exc:  # python-multipart's MultipartParseError and friends
                raise BadUpload(f"malformed multipart body: {type(exc).__name__}") from None
        try:
            parser.finalize()
        except Exception as exc:
            raise BadUpload(f"malformed multipart body: {type(exc).__name__}") from None
    except BaseException:
        fh = state["fh"]
        if fh is not None:
            try:
                fh.close()  # type: ignore[union-attr]
            except OSError:  # flushing into a full disk: the file goes anyway
                pass
        out.cleanup()
        raise
    if out.path is None:
        raise BadUpload("no file part named 'file' in the upload")
    if state["fh"] is not None:  # body ended inside the file part
        state["fh"].close()  # type: ignore[union-attr]
        out.cleanup()
        raise BadUpload("the upload ended before the file part was complete")
    return out
