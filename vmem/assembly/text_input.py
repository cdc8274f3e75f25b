"""Ingest input checks: is this file usable UTF-8 text, and streaming its lines.

Both functions read with bounded memory (1 MiB at a time), so a file near the
size limit costs no more memory than a small one.
"""

from __future__ import annotations

import codecs
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec

from vmem.errors import InputError

DEFAULT_MAX_BYTES = 64 * 2**20

_CHUNK = 2**20

# iter_lines yields a longer line in pieces of at most this many characters,
# so one pathological line (minified JSON, a base64 blob) cannot make the
# reader hold the whole file.
MAX_LINE_CHARS = 2**20

_BOM = "\ufeff"


class TextFileInfo(msgspec.Struct, frozen=True):
    """A file that passed :func:`check_text_file`: its path, byte size and SHA-256."""

    path: str
    size: int
    sha256: str


def _stat_regular(path: Path) -> int:
    """Size of `path`, or InputError if it is missing or not a regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path and try again") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory; pass a text file inside it instead")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs and devices may block or never end; ingest needs a fixed file.
        raise InputError(f"{path}: is not a regular file; copy its content to a file first")
    return st.st_size


def _too_large(path: Path, size: int, max_bytes: int) -> InputError:
    return InputError(
        f"{path}: is {size} bytes, larger than the limit of {max_bytes} bytes; "
        f"raise the limit with --max-bytes or split the file"
    )


def check_text_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> TextFileInfo:
    """Check that `path` is a non-blank UTF-8 text file of at most `max_bytes` bytes.

    Raises InputError naming the file and the fix when it is missing, a
    directory, empty or only whitespace, binary (has a NUL byte), not valid
    UTF-8, or too large.  A leading UTF-8 BOM is allowed and ignored.
    """
    path = Path(path)
    size = _stat_regular(path)
    if size > max_bytes:
        raise _too_large(path, size, max_bytes)
    if size == 0:
        raise InputError(f"{path}: is empty; there is nothing to ingest")

    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes read before the current chunk
    bad_utf8_at: int | None = None
    has_content = False
    first_text = True
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                nul = chunk.find(b"\0")
                if nul >= 0:
                    # NUL wins over a UTF-8 error: "binary" is the better diagnosis.
                    raise InputError(
                        f"{path}: looks binary (NUL byte at offset {offset + nul}); "
                        f"ingest only takes UTF-8 text, convert it to text first"
                    )
                if bad_utf8_at is None:
                    pending = len(decoder.getstate()[0])
                    try:
                        text = decoder.decode(chunk)
                    except UnicodeDecodeError as e:
                        # e.start counts from the bytes held over from the
                        # previous chunk, not from this chunk.
                        bad_utf8_at = offset - pending + e.start
                    else:
                        if first_text and text:
                            text = text.removeprefix(_BOM)
                            first_text = False
                        if not has_content and text and not text.isspace():
                            has_content = True
                offset += len(chunk)
                # The file may have grown since stat(); keep the bound honest.
                if offset > max_bytes:
                    raise _too_large(path, offset, max_bytes)
            if bad_utf8_at is None:
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    bad_utf8_at = offset - pending
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None

    if bad_utf8_at is not None:
        raise InputError(
            f"{path}: is not valid UTF-8 (first bad byte at offset {bad_utf8_at}); "
            f"re-encode it as UTF-8, e.g. `iconv -f LATIN1 -t UTF-8`"
        )
    if not has_content:
        raise InputError(f"{path}: contains only whitespace; there is nothing to ingest")
    return TextFileInfo(path=str(path), size=offset, sha256=digest.hexdigest())


def iter_lines(path: Path) -> Iterator[str]:
    """Stream the lines of UTF-8 file `path`, line endings kept and normalised to "\\n".

    A leading BOM is skipped.  A line longer than MAX_LINE_CHARS characters
    is yielded in consecutive pieces, so the concatenation of everything
    yielded is always the file's text.  Call :func:`check_text_file` first for
    precise diagnostics; a decoding error here is reported as InputError.
    """
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8-sig", errors="strict") as f:
            while line := f.readline(MAX_LINE_CHARS):
                yield line
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: is not valid UTF-8 ({e.reason}); re-encode it as UTF-8 and run "
            f"the check again for the exact offset"
        ) from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path and try again") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; pass a text file inside it instead") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
