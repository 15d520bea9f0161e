"""Split delimited text into records before Arrow parses it, so a stray quote costs one row.

Arrow's CSV parser reads an unclosed quote as a field that runs to the end of the file (the
rest of the month silently lost) and stops the whole read on one field longer than its
block. This module decides, before Arrow sees the text, where every record starts and ends,
following Arrow's own quoting rules (a quote opens a quoted field only as a field's first
character; ``""`` inside one is a quote; anywhere else a quote is literal text):

- a physical line is its own record unless it ends inside a quoted field;
- such a line may join the following lines into one record only when the joined record has
  the header's number of fields and no line inside it would parse on its own as a complete
  record of that many fields (a comment with a line break); otherwise the line holding the
  stray quote alone is rejected (``malformed_row``) and the next line starts afresh;
- a record longer than ``max_record_bytes`` is rejected (``oversized_field``).

Clean files (no line ending inside quotes, none oversized) are split by numpy byte scans
alone; Python walks only the rare lines whose quotes do not balance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["MALFORMED_ROW", "OVERSIZED_FIELD", "Records", "split_records"]

MALFORMED_ROW = "malformed_row"
OVERSIZED_FIELD = "oversized_field"

_LF, _CR, _QUOTE = 0x0A, 0x0D, 0x22
_SPACES = b" \t\r\v\f"
#: ``""`` escapes one joined record may hold before it is given up as malformed (bounds the
#: Python walk on hostile input; a real comment holds a handful).
_MAX_ESCAPES = 1 << 16
#: Bytes compared at a time in the vectorised scans (fits a core's cache).
_CHUNK = 1 << 18
#: Line ends a quoted field crosses one by one before the walk jumps to its closing quote.
_STEPWISE = 64
_CROSSES_RECORD = -2

# how a walk over one record ended
_END, _OPEN, _INNER, _TOO_MANY, _CR_SPLIT, _GIVE_UP = range(6)
# per-line status
_DROPPED, _START, _INSIDE, _BAD_START, _BAD_INSIDE = range(5)


@dataclass(frozen=True)
class Records:
    """The records of one file: the good ones as text for Arrow, the rejected ones apart.

    ``data`` holds the header and every good record, each ending in ``\\n``, so Arrow reads
    exactly one row (or one invalid row) per record; ``lines[k]`` is the 1-based physical
    line on which record ``k`` of ``data`` starts (``lines[0]`` is the header's). Rejected
    records are listed by first line, text (cut to ``max_text`` characters) and reason.
    ``multiline`` says some good record spans lines, so Arrow must be told that values hold
    newlines (``newlines_in_values``), or a block boundary could cut that record.
    """

    data: bytes
    lines: np.ndarray
    bad_lines: np.ndarray
    bad_texts: list[str]
    bad_reasons: list[str]
    multiline: bool = False


def split_records(data: bytes, delimiter: str, n_fields: int, *,
                  max_record_bytes: int = 1 << 20, max_text: int = 1000) -> Records:
    """Records of UTF-8 delimited ``data`` whose first line is a header of ``n_fields``.

    Blank lines (whitespace only) between records are dropped. Records with the wrong number
    of fields but sane quoting stay in ``data``: the caller's Arrow parser rejects those and
    maps their row number through ``lines``.
    """
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValueError("the delimiter must be one character other than a quote or newline")
    return _Splitter(data, ord(delimiter), n_fields, max_record_bytes).records(max_text)


@dataclass(frozen=True)
class _Scan:
    """What one pass over the bytes found (positions are offsets into the text)."""

    newlines: np.ndarray  # every newline
    after: np.ndarray  # the byte after each newline (a line's first byte)
    before: np.ndarray  # the byte before each newline (a carriage return in CRLF text)
    returns: int  # carriage returns in all
    odd: list[np.ndarray]  # line ends (newline, or the text's end) after an odd quote count
    stray: list[np.ndarray]  # quotes that would open a field away from a field's start


def _scan(buf: np.ndarray, data: bytes, delim: int) -> _Scan:
    """Newlines, line edges and quoting problems in one pass over cache-sized chunks (a
    whole-buffer comparison writes, then rereads, a mask as large as the file).

    Quotes are paired from each line's start (``carry`` holds the parity of the line that
    runs over a chunk's end). That pairing is Arrow's reading exactly when every quote that
    would open a field stands at a field's start: after a delimiter, the line's start, or
    right after a closing quote (a ``""`` escape). A line with an odd count, or with an
    opening quote anywhere else (a literal quote in ``5"00``), must be walked.
    """
    size = len(buf)
    quote_from, return_from = data.find(b'"'), data.find(b"\r")
    allowed = np.zeros(256, dtype=bool)
    allowed[[delim, _LF, _QUOTE]] = True
    newlines: list[np.ndarray] = []
    after: list[np.ndarray] = []
    before: list[np.ndarray] = []
    odd: list[np.ndarray] = []
    stray: list[np.ndarray] = []
    returns = carry = 0
    for start in range(0, size, _CHUNK):  # a few hundred chunks per 100 MB, not rows
        end = min(start + _CHUNK, size)
        lo = max(start - 1, 0)
        window = buf[lo:min(end + 1, size)]  # the chunk and one byte either side
        off = start - lo
        chunk = window[off:off + end - start]
        nl = np.flatnonzero(chunk == _LF)
        newlines.append(nl + start)
        after.append(window[np.minimum(nl + off + 1, len(window) - 1)])
        before.append(window[nl + off - 1])
        if 0 <= return_from < end:
            returns += int(np.count_nonzero(chunk == _CR))
        if not 0 <= quote_from < end:
            continue
        q = np.flatnonzero(chunk == _QUOTE)
        upto = np.concatenate(([-carry], np.searchsorted(q, nl)))  # quotes before each line
        uneven = (np.diff(upto) & 1).astype(bool)
        if uneven.any():
            odd.append(nl[uneven] + start)
        carry = (len(q) - int(upto[-1])) & 1 if len(nl) else (carry + len(q)) & 1
        if len(q):
            per_line = np.diff(np.append(np.maximum(upto, 0), len(q)))
            opening = ((np.arange(len(q)) - np.repeat(upto, per_line)) & 1) == 0
            at = q[opening]
            bad = ~allowed[window[at + off - 1]] & (at + start > 0)
            if bad.any():
                stray.append(at[bad] + start)
    if carry and size and data[-1] != _LF:
        odd.append(np.array([size], dtype=np.int64))

    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    return _Scan(joined(newlines, np.int64), joined(after, np.uint8),
                 joined(before, np.uint8), returns, odd, stray)


class _Splitter:
    """Byte-level facts about every physical line (vectorised), and the walk over the rare
    lines that need one."""

    def __init__(self, data: bytes, delim: int, n_fields: int, max_record_bytes: int) -> None:
        self.data, self.delim, self.n_fields = data, delim, n_fields
        self.max_record_bytes = max_record_bytes
        buf = self.buf = np.frombuffer(data, dtype=np.uint8)
        size = len(buf)
        scan = _scan(buf, data, delim)
        newlines = scan.newlines
        starts = np.concatenate(([0], newlines + 1))
        stops = np.concatenate((newlines, [size]))
        first = np.concatenate((buf[:1], scan.after))
        if len(starts) > 1 and starts[-1] == size:  # text ends in a newline: no empty last line
            starts, stops, first = starts[:-1], stops[:-1], first[:-1]
        self.starts, self.stops = starts, stops
        lengths = stops - starts
        self.blank = self._blank(lengths, first)
        self.oversized = lengths > max_record_bytes
        suspect = np.zeros(len(starts), dtype=bool)
        for at in [*scan.odd, *scan.stray, self._lone_returns(scan)]:  # a handful of arrays
            suspect[np.searchsorted(starts, at, side="right") - 1] = True
        self.clean = ~suspect
        self.clean[0] = True  # the header is line 1 alone (the caller has read it already)
        self.stop_at = re.compile(b"[" + re.escape(bytes([delim])) + b"\r\n]")
        self.complete_alone: dict[int, bool] = {}

    # ------------------------------------------------------------------ vectorised facts

    def _blank(self, lengths: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Empty or whitespace-only lines; only lines that start with a space are looked at
        one by one (a rare sight in an extract)."""
        spaces = bytes(b for b in _SPACES if b != self.delim)
        is_space = np.zeros(256, dtype=bool)
        is_space[list(spaces)] = True
        blank = (lengths == 0) | ((lengths == 1) & (first == _CR))
        for line in np.flatnonzero(is_space[first] & ~blank):  # rare: lines led by a space
            blank[line] = not self.data[self.starts[line]:self.stops[line]].strip(spaces)
        blank[0] = False
        return blank

    def _lone_returns(self, scan: _Scan) -> np.ndarray:
        """Carriage returns not followed by a newline: Arrow ends a row at one, so their
        lines are walked. Found only when the returns outnumber the CRLF line ends."""
        crlf = np.count_nonzero((scan.before == _CR) & (scan.newlines > 0))
        if scan.returns <= crlf:
            return np.zeros(0, dtype=np.int64)
        returns = np.flatnonzero(self.buf == _CR)  # rare: a second pass
        after = self.buf[np.minimum(returns + 1, len(self.buf) - 1)]
        return returns[(returns + 1 == len(self.buf)) | (after != _LF)]

    def _fields(self, lo: int, hi: int) -> np.ndarray:
        """Fields of each line in ``[lo, hi)``, read as balanced lines (right for clean ones):
        delimiters outside quotes, plus one."""
        start, stop = self.starts[lo], self.stops[hi - 1]
        segment = self.buf[start:stop]
        firsts = self.starts[lo:hi] - start
        at = np.flatnonzero(segment == self.delim)
        line = np.searchsorted(firsts, at, side="right") - 1
        quotes = np.flatnonzero(segment == _QUOTE)
        if len(quotes):
            inside = (np.searchsorted(quotes, at) - np.searchsorted(quotes, firsts)[line]) & 1
            line = line[inside == 0]
        return 1 + np.bincount(line, minlength=hi - lo)

    # --------------------------------------------------------------------- the rare walk

    def _line_of(self, pos: int) -> int:
        return int(np.searchsorted(self.starts, pos, side="right")) - 1

    def _any_complete(self, lo: int, hi: int) -> bool:
        """Whether a line in ``[lo, hi)`` parses on its own as a complete record of the
        header's number of fields (then it is a record, not the inside of a quoted field).
        Looked at in growing windows: the first line is the usual answer."""
        width = 1
        while lo < hi:
            top = min(hi, lo + width)
            if self._any_complete_in(lo, top):
                return True
            lo, width = top, width * 4
        return False

    def _any_complete_in(self, lo: int, hi: int) -> bool:
        clean = self.clean[lo:hi] & ~self.blank[lo:hi]
        if clean.any() and (clean & (self._fields(lo, hi) == self.n_fields)).any():
            return True
        for line in np.flatnonzero(~self.clean[lo:hi] & ~self.blank[lo:hi]) + lo:
            if self._complete_alone(int(line)):
                return True
        return False

    def _closing_quote(self, pos: int, limit: int, inner: int) -> tuple[int, int]:
        """The next quote from ``pos`` inside a quoted field and the next line not yet
        checked; -1 when there is none before ``limit``, ``_CROSSES_RECORD`` when the field
        would run over a line that is a record of its own (``inner`` >= 0 only)."""
        data = self.data
        if inner < 0:
            return data.find(b'"', pos, limit), inner
        for _ in range(_STEPWISE):  # a field closes on its line or a few lines on, as a rule
            newline = data.find(b"\n", pos, limit)
            close = data.find(b'"', pos, limit if newline < 0 else newline)
            if close >= 0 or newline < 0:
                return close, inner
            if inner >= len(self.starts):
                return -1, inner
            if self._any_complete(inner, inner + 1):
                return _CROSSES_RECORD, inner
            inner, pos = inner + 1, newline + 1
        close = data.find(b'"', pos, limit)  # a long field: one jump, lines checked in bulk
        line = self._line_of(min(limit if close < 0 else close, len(data) - 1))
        if line >= inner:
            if self._any_complete(inner, line + 1):
                return _CROSSES_RECORD, inner
            inner = line + 1
        return close, inner

    def _complete_alone(self, line: int) -> bool:
        if line not in self.complete_alone:
            how, _, fields = self._walk(int(self.starts[line]), int(self.stops[line]), -1)
            self.complete_alone[line] = how == _END and fields == self.n_fields
        return self.complete_alone[line]

    def _walk(self, pos: int, limit: int, inner: int) -> tuple[int, int, int]:
        """Read one record from ``pos`` as Arrow's parser does: (how it ended, where, fields).

        ``inner`` >= 0 lets the record run over line ends inside quotes, checking each line
        it reaches from ``inner`` on; it stops as soon as one is a complete record itself,
        or the fields outnumber the header's. It ends at a line's newline (or ``limit``).
        """
        data, delim, n_fields = self.data, self.delim, self.n_fields
        fields, escapes = 1, 0
        while True:
            if pos >= limit:
                return _END, limit, fields
            byte = data[pos]
            if byte == _QUOTE:  # a quoted field: to its closing quote, over ``""`` escapes
                pos += 1
                while True:
                    close, inner = self._closing_quote(pos, limit, inner)
                    if close < 0:
                        return (_INNER if close == _CROSSES_RECORD else _OPEN), limit, fields
                    if close + 1 < limit and data[close + 1] == _QUOTE:
                        escapes += 1
                        if escapes > _MAX_ESCAPES:
                            return _GIVE_UP, close, fields
                        pos = close + 2
                        continue
                    pos = close + 1
                    break
            elif byte == delim:
                fields += 1
                if fields > n_fields:
                    return _TOO_MANY, pos, fields
                pos += 1
                continue
            elif byte in (_LF, _CR):
                return self._line_end(pos, fields)
            found = self.stop_at.search(data, pos, limit)  # the rest of an unquoted field
            if found is None:
                return _END, limit, fields
            pos = found.start()
            if data[pos] != delim:
                return self._line_end(pos, fields)
            fields += 1
            if fields > n_fields:
                return _TOO_MANY, pos, fields
            pos += 1

    def _line_end(self, pos: int, fields: int) -> tuple[int, int, int]:
        """The record ends at a newline or carriage return; a lone return ends Arrow's row
        mid-line unless only returns follow it on that line."""
        data = self.data
        if data[pos] == _LF or data[pos + 1:pos + 2] == b"\n":
            return _END, pos + (data[pos] == _CR), fields
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline
        if data[pos:stop].strip(b"\r"):
            return _CR_SPLIT, pos, fields
        return _END, stop, fields

    # ------------------------------------------------------------------------ records

    def records(self, max_text: int) -> Records:
        status = np.where(self.blank, _DROPPED, _START).astype(np.int8)
        status[self.oversized & self.clean & ~self.blank] = _BAD_START
        status[0] = _START
        oversized = self.oversized.copy()
        for line in np.flatnonzero(~self.clean & ~self.blank):  # rare: unbalanced lines
            line = int(line)
            if status[line] in (_INSIDE, _BAD_INSIDE):  # taken in by an earlier record
                continue
            last = self._record_from(line)
            if last is None:
                status[line] = _BAD_START
                continue
            big = bool(self.stops[last] - self.starts[line] > self.max_record_bytes)
            status[line] = _BAD_START if big else _START
            status[line + 1:last + 1] = _BAD_INSIDE if big else _INSIDE
            oversized[line] = big
        return self._assemble(status, oversized, max_text)

    def _record_from(self, line: int) -> int | None:
        """Last line of the record that starts at ``line`` (an unbalanced line), or None when
        the line is rejected on its own."""
        how, end, fields = self._walk(int(self.starts[line]), len(self.data), line + 1)
        if how != _END:
            return None
        last = self._line_of(min(end, len(self.data) - 1))
        if last > line and fields != self.n_fields:
            return None
        return last

    def _assemble(self, status: np.ndarray, oversized: np.ndarray, max_text: int) -> Records:
        data = self.data
        keep = (status == _START) | (status == _INSIDE)
        if keep.all():
            text = data
        else:
            text = self._kept_bytes(keep)
        if text and not text.endswith(b"\n"):
            text += b"\n"
        bad = np.flatnonzero(status == _BAD_START)
        edges = np.append(np.flatnonzero(status != _BAD_INSIDE), len(status))
        lasts = edges[np.searchsorted(edges, bad, side="right")] - 1  # a bad record's last line
        texts: list[str] = []
        for start, stop in zip(self.starts[bad].tolist(), self.stops[lasts].tolist(),
                               strict=True):  # rare: rejected records
            raw = data[start:min(stop, start + 4 * max_text + 1)].rstrip(b"\r")
            texts.append(raw.decode("utf-8", "replace")[:max_text])
        reasons = [OVERSIZED_FIELD if oversized[line] else MALFORMED_ROW for line in bad]
        return Records(
            data=text,
            lines=(np.flatnonzero(status == _START) + 1).astype(np.int64),
            bad_lines=(bad + 1).astype(np.int64),
            bad_texts=texts,
            bad_reasons=reasons,
            multiline=bool((status == _INSIDE).any()),
        )

    def _kept_bytes(self, keep: np.ndarray) -> bytes:
        """The kept lines' bytes, newlines included, as one buffer: slices joined when the
        dropped lines are few, one numpy mask otherwise."""
        ends = np.append(self.starts[1:], len(self.data))
        edges = np.diff(np.concatenate(([0], keep.astype(np.int8), [0])))
        first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        if len(first) <= 4096:
            view = memoryview(self.data)
            return b"".join(view[s:e] for s, e in
                            zip(self.starts[first].tolist(), ends[last].tolist(), strict=True))
        mask = np.repeat(keep, ends - self.starts)
        return self.buf[mask].tobytes()
