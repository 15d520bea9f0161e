"""``pipeline.kernels.ziparchive``: members deflated apart, written as one zip that
``zipfile`` (and so Excel's and LibreOffice's readers) takes, ZIP64 included."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from pipeline.kernels import ziparchive
from pipeline.kernels.ziparchive import deflate, write_zip

CONTENTS = {
    "[Content_Types].xml": "<Types/>",
    "xl/worksheets/sheet1.xml": [b"<sheetData>", memoryview(b"<row>" * 5000), b"</sheetData>"],
    "empty.txt": b"",
    "naïve µg.txt": "µg/L → ng/L",
}


def _expected(content: object) -> bytes:
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, bytes):
        return content
    return b"".join(bytes(p) for p in content)  # type: ignore[union-attr]


def _write(path: Path) -> None:
    write_zip(path, (deflate(name, list(c) if isinstance(c, list) else c)
                     for name, c in CONTENTS.items()))


@pytest.mark.parametrize("limits", [(ziparchive.ZIP64_LIMIT, ziparchive.MEMBER_LIMIT), (1, 1)],
                         ids=["classic", "zip64"])
def test_zipfile_reads_every_member_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         limits: tuple[int, int]) -> None:
    monkeypatch.setattr(ziparchive, "ZIP64_LIMIT", limits[0])
    monkeypatch.setattr(ziparchive, "MEMBER_LIMIT", limits[1])
    path = tmp_path / "book.zip"
    _write(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC checks
        assert zf.namelist() == list(CONTENTS)
        for name, content in CONTENTS.items():
            assert zf.read(name) == _expected(content)
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert (info.external_attr >> 16) & 0o777 == 0o600


def test_same_content_same_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "a.zip")
    _write(tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_deflate_counts_what_it_was_given() -> None:
    member = deflate("x", iter([b"ab", memoryview(b"cd"), b""]), ahead=True)
    assert (member.size, member.name) == (4, "x")
    assert member.crc == zipfile.crc32(b"abcd")
    assert member.compressed_size == sum(len(p) for p in member.pieces) > 0


def test_many_short_parts_compress_as_well_as_one(tmp_path: Path) -> None:
    """Short parts are gathered before compressing: fed one at a time, ISA-L's stream
    grows many times over (a sheet's head, a few rows at a time)."""
    row = b'<row r="7"><c t="s"><v>12</v></c><c><v>243</v></c><c t="b"><v>1</v></c></row>'
    parts = [row] * 4000 + [memoryview(row * 4000)] + [row] * 500
    whole = b"".join(bytes(p) for p in parts)
    pieces, one = deflate("a.xml", parts), deflate("b.xml", whole)
    assert pieces.compressed_size <= 1.05 * one.compressed_size
    write_zip(tmp_path / "p.zip", [pieces, one])
    with zipfile.ZipFile(tmp_path / "p.zip") as zf:
        assert zf.testzip() is None
        assert zf.read("a.xml") == whole == zf.read("b.xml")
