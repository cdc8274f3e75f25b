"""Specification of vmem.assembly.text_input: which files ingest accepts, and line streaming."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vmem.assembly.text_input import (
    MAX_LINE_CHARS,
    TextFileInfo,
    check_text_file,
    iter_lines,
)
from vmem.errors import InputError, UsageError

MIB = 2**20


def write(tmp_path: Path, data: bytes, name: str = "doc.md") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def bad(path: Path, **kwargs: int) -> str:
    """The message of the InputError check_text_file raises for `path`."""
    with pytest.raises(InputError) as err:
        check_text_file(path, **kwargs)
    assert str(path) in err.value.message, "the message must name the file"
    return err.value.message


# --- accepted files -------------------------------------------------------------


def test_good_file_reports_size_and_sha256(tmp_path: Path) -> None:
    data = "# Title\n\nSome text — with ünïcödé 🙂.\n".encode()
    p = write(tmp_path, data)
    info = check_text_file(p)
    assert info == TextFileInfo(path=str(p), size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_bom_is_allowed(tmp_path: Path) -> None:
    p = write(tmp_path, b"\xef\xbb\xbfhello\n")
    assert check_text_file(p).size == 9


def test_multibyte_character_across_chunk_boundary_is_fine(tmp_path: Path) -> None:
    # "é" is 2 bytes; put its first byte as the last byte of the first 1 MiB chunk.
    p = write(tmp_path, b"a" * (MIB - 1) + "é".encode() + b"b\n")
    assert check_text_file(p).size == MIB + 3


def test_file_at_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    p = write(tmp_path, b"x" * 100)
    assert check_text_file(p, max_bytes=100).size == 100


# --- rejected files: one test per case ----------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    msg = bad(tmp_path / "nope.md")
    assert "no such file" in msg


def test_directory(tmp_path: Path) -> None:
    msg = bad(tmp_path)
    assert "is a directory" in msg


def test_empty_file(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b""))
    assert "is empty" in msg


def test_whitespace_only_file(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b" \n\t\r\n  \n"))
    assert "only whitespace" in msg


def test_bom_only_file_counts_as_whitespace_only(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"\xef\xbb\xbf\n\n"))
    assert "only whitespace" in msg


def test_binary_file_names_nul_offset(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"text\x00more"))
    assert "looks binary (NUL byte at offset 4)" in msg


def test_nul_in_a_later_chunk_names_absolute_offset(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"a" * (MIB + 10) + b"\x00"))
    assert f"NUL byte at offset {MIB + 10}" in msg


def test_nul_wins_over_invalid_utf8(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"\xff\xfeh\x00i\x00"))  # UTF-16 with BOM
    assert "looks binary" in msg


def test_invalid_utf8_names_first_bad_byte(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, "café ".encode() + b"\xe9t\xe9\n"))  # Latin-1 é after UTF-8 text
    assert "not valid UTF-8" in msg
    assert "offset 6" in msg
    assert "iconv" in msg


def test_invalid_utf8_in_a_later_chunk_names_absolute_offset(tmp_path: Path) -> None:
    # The bad sequence starts one byte before the chunk boundary.
    msg = bad(write(tmp_path, b"a" * (MIB - 1) + b"\xc3(" + b"b\n"))
    assert f"offset {MIB - 1}" in msg


def test_truncated_character_at_end_of_file(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"abc\xe2\x82"))  # first two bytes of "€"
    assert "offset 3" in msg


def test_too_large_names_size_limit_and_flag(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, b"x" * 101), max_bytes=100)
    assert "101 bytes" in msg
    assert "limit of 100 bytes" in msg
    assert "--max-bytes" in msg


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    msg = bad(fifo)  # must not block waiting for a writer
    assert "not a regular file" in msg


def test_input_error_is_a_usage_error() -> None:
    assert issubclass(InputError, UsageError)


# --- iter_lines -----------------------------------------------------------------


def test_iter_lines_keeps_ends_skips_bom_and_normalises_newlines(tmp_path: Path) -> None:
    p = write(tmp_path, b"\xef\xbb\xbf# T\r\n\r\nbody \xc3\xa9\nlast")
    assert list(iter_lines(p)) == ["# T\n", "\n", "body é\n", "last"]


def test_iter_lines_yields_a_huge_line_in_bounded_pieces(tmp_path: Path) -> None:
    line = "y" * (2 * MAX_LINE_CHARS + 5) + "\n"
    p = write(tmp_path, (line + "next\n").encode())
    pieces = list(iter_lines(p))
    assert all(len(x) <= MAX_LINE_CHARS for x in pieces)
    assert "".join(pieces) == line + "next\n"
    assert pieces[-1] == "next\n"


def test_iter_lines_is_lazy_and_reports_bad_utf8_as_input_error(tmp_path: Path) -> None:
    p = write(tmp_path, b"ok\n\xff\xff\n")
    lines = iter_lines(p)  # nothing is opened until iterated
    with pytest.raises(InputError, match="not valid UTF-8"):
        list(lines)


def test_iter_lines_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(iter_lines(tmp_path / "gone.md"))
