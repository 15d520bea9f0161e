"""Sentences for millions of rows from a small table of clauses, without per-row Python.

Why: string work per row and per clause dominated classification (first pandas string
arithmetic, then one Arrow kernel pass per clause, separator and word list), yet almost
every part of a sentence takes few distinct values. So:

* A sentence is *values* (results, dates: many distinct ones), each followed by *glue*:
  everything else, i.e. the clauses' fixed text, their separators and their *words* (a
  unit, a band, a word list chosen by flags, a profile text), plus the opening glue before
  the first value. The glue depends only on a row's *shape* (which clauses and optional
  parts apply, and the codes of its words), and rows share a few shapes.
* Values are formatted once per distinct value (``distinct``), and only on the rows whose
  clause can show them. A clause missing one of its values is left out.
* Glue is rendered in plain Python once per distinct shape (``shapes``); a value and the
  glue after it are then paired once per distinct combination (``pair``), so most
  sentences are two pieces.
* One Arrow ``take`` lists every row's pieces in order from the small table of distinct
  pieces: its data buffer already *is* the sentences, so only the row offsets are
  computed (numpy, ``assemble``). Rows with no clause are ''.
* Clause ids (``rule_ids``) are a bitmask of the clauses that fired, each mask rendered once.

A clause's ``text`` is a template: ``{name}`` is a slot of the ``slots`` table (a
``Value``, a ``Word``, a ``Words`` list, or a fixed ``str``), and ``[...]`` is an optional
part, written only when every slot inside it is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, reduce
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY_US = 86_400_000_000
#: Key ranges up to this are looked up in a table, larger ones hashed.
DENSE = 1 << 20
_NAT = np.iinfo(np.int64).min

Formatter = Callable[[pd.Series], pa.Array]


def as_mask(values: Any) -> np.ndarray:
    """A boolean column as a numpy mask (missing -> False)."""
    if isinstance(values, np.ndarray | pd.Series) and values.dtype == np.bool_:
        return np.asarray(values)  # a view: masks are only read
    return np.asarray(pd.Series(values).fillna(False), dtype=bool)


# Value formatters: value by value, so applying them to distinct values only is the same.

def string(values: pd.Series) -> pa.Array:
    """A text column as Arrow strings (missing -> null)."""
    return pa.array(values.astype("object").where(values.notna(), None).to_numpy(), pa.string())


def number(values: pd.Series) -> pa.Array:
    """Numbers as text, exact enough never to cross a cut-off: 262.0 -> '262', 37.4 ->
    '37.4', 179.9982 (132.84 pmol/L in ng/L) -> '179.9982'. Rounding to two decimals
    printed that deficient value as '180' (R1: 180 is indeterminate) and an MMA of 0.451
    µmol/L, raised, as '0.45' (R5: raised is above 0.45). Six decimals hold exactly any
    result reported with up to three and converted by a factor of up to three (1.355,
    0.001), and drop the binary noise of the conversion (179.99820000000003)."""
    rounded = values.astype("float64").round(6).to_numpy()
    return pa.array(rounded, pa.float64(), from_pandas=True).cast(pa.string())


def integer(values: pd.Series) -> pa.Array:
    """Whole numbers as text: 90.0 -> '90'."""
    return pa.array(values.astype("float64").to_numpy(), pa.float64(), from_pandas=True) \
        .cast(pa.int64()).cast(pa.string())


def day(values: pd.Series) -> pa.Array:
    """Dates as ISO text (a cast is much faster than strftime)."""
    stamps = pa.array(values.astype("datetime64[us]"), pa.timestamp("us"), from_pandas=True)
    return stamps.cast(pa.date32()).cast(pa.string())


@dataclass(frozen=True)
class Lookup:
    """A formatter of integer codes to ``words`` (a missing or negative code: no word)."""

    words: tuple[str, ...]

    def __call__(self, codes: pd.Series) -> pa.Array:
        idx = pa.array(codes.astype("float64").to_numpy(), pa.float64(), from_pandas=True)
        idx = pc.if_else(pc.less(idx, 0), pa.scalar(None, pa.float64()), idx)
        return pc.take(pa.array(self.words, pa.string()), idx.cast(pa.int64()))


def lookup(words: Sequence[str]) -> Lookup:
    """A formatter of integer codes to words (codes are already distinct: no hashing)."""
    return Lookup(tuple(words))


@dataclass
class Distinct:
    """Texts per row, as codes into distinct texts (a null text: nothing to show)."""

    codes: np.ndarray
    texts: pa.Array

    @cached_property
    def valid(self) -> np.ndarray:
        """Rows with a text."""
        return np.asarray(self.texts.is_valid(), dtype=bool)[self.codes]

    @property
    def words(self) -> list[str | None]:
        return self.texts.to_pylist()


def distinct(values: pd.Series, fmt: Formatter, rows: np.ndarray) -> Distinct:
    """``fmt`` of each row's value, formatting each distinct value once; null off ``rows``."""
    if fmt is day:
        # Timestamps to days (floor, as Arrow's date32 cast does): a dense range of days.
        stamps = values.astype("datetime64[us]").to_numpy().view("int64")[rows]
        missing = stamps == _NAT
        days = np.floor_divide(stamps, DAY_US)
        seen = days[~missing]
        low, high = (int(seen.min()), int(seen.max())) if len(seen) else (0, -1)
        if high - low < DENSE:
            codes = np.where(missing, high - low + 1, days - low)
            uniques = np.append(np.arange(low, high + 1, dtype="int64") * DAY_US, _NAT)
        else:
            codes, uniques = pd.factorize(np.where(missing, _NAT, days * DAY_US))
        texts = day(pd.Series(uniques.view("datetime64[us]")))
    elif fmt is string:
        codes, uniques = pd.factorize(values.array[rows], use_na_sentinel=False)
        texts = string(pd.Series(uniques, dtype=values.dtype))
    elif isinstance(fmt, Lookup):  # the codes are the answer: no hashing
        found = values.to_numpy(dtype="float64", na_value=np.nan)
        codes = np.where(rows & (found >= 0), found + 1, 0)  # 0: no word (NaN >= 0 is False)
        out = codes.astype("int32")
        if len(out) and ((out != codes).any() or out.max() > len(fmt.words)):
            raise IndexError(f"codes outside 0..{len(fmt.words) - 1} for {fmt.words}")
        return Distinct(out, pa.array([None, *fmt.words], pa.string()))
    else:  # numbers, by bit pattern: -0.0 ('-0') stays apart from 0.0 ('0')
        bits = values.astype("float64").to_numpy().view("int64")[rows]
        codes, uniques = pd.factorize(bits)
        texts = fmt(pd.Series(uniques.view("float64")))
    out = np.zeros(len(values), dtype="int32")
    out[rows] = codes + 1
    return Distinct(out, pa.concat_arrays([pa.nulls(1, pa.string()), texts]))


def pair(first: Distinct, second: Distinct, rows: np.ndarray) -> Distinct:
    """``first + second`` on ``rows``, formed once per distinct combination."""
    where = np.flatnonzero(rows)
    width = len(second.texts)
    key = first.codes[where].astype("int64") * width + second.codes[where]
    size = len(first.texts) * width
    if size <= DENSE:
        used = np.zeros(size, dtype=bool)
        used[key] = True
        uniques = np.flatnonzero(used)
        codes = (np.cumsum(used) - 1)[key]
    else:
        codes, uniques = pd.factorize(key)
    out = np.zeros(len(rows), dtype="int32")
    out[where] = codes
    return Distinct(out, pc.binary_join_element_wise(
        first.texts.take(uniques // width), second.texts.take(uniques % width), ""))


def bits(flags: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean columns as a bitmask (bit ``i``: ``flags[i]``)."""
    dtype = np.uint16 if len(flags) <= 16 else np.int64
    out = np.zeros(len(flags[0]), dtype=dtype)
    for i, flag in enumerate(flags):
        out |= flag.astype(dtype) << dtype(i)
    return out


def shapes(components: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Codes of the distinct combinations of the components (small non-negative ints), and
    each combination's components, in order: rows of one shape agree on all of them."""
    n = len(components[0])
    key = np.zeros(n, dtype="int64")
    size = 1
    for codes in components:
        radix = int(codes.max()) + 1 if n else 1
        if size * radix >= 1 << 62:
            key, uniques = pd.factorize(key)
            key, size = key.astype("int64"), len(uniques)
        key *= radix
        key += codes
        size *= radix
    shape, uniques = pd.factorize(key)
    first = np.empty(len(uniques), dtype=np.intp)
    first[shape] = np.arange(n)  # any row of each shape: they all agree on the components
    return shape, list(zip(*(codes[first].tolist() for codes in components), strict=True))


def assemble(pieces: Sequence[tuple[np.ndarray, Distinct]]) -> pa.Array:
    """Per row, the concatenation of its present pieces (``(present, texts)``, in order).

    One ``take`` from the table of every piece's texts lists each row's pieces in order,
    so its data buffer is the sentences; the row offsets are those of each row's first
    piece. Rows are handled by pattern (which pieces are present), each pattern densely.
    """
    n = len(pieces[0][0])
    if n == 0:
        return pa.array([], pa.large_string())
    table = pa.concat_arrays([texts.texts.cast(pa.large_string()) for _, texts in pieces])
    bases = np.cumsum([0] + [len(texts.texts) for _, texts in pieces])
    pattern = bits([present for present, _ in pieces])
    per_pattern = np.bincount(pattern, minlength=1 << len(pieces))
    sizes = np.array([bin(p).count("1") for p in range(len(per_pattern))], dtype="int64")
    starts = np.zeros(n + 1, dtype="int64")
    np.cumsum(sizes[pattern], out=starts[1:])
    flat = np.empty(int(starts[-1]), dtype="int32")
    for p in np.flatnonzero(per_pattern[1:]) + 1:
        rows = np.flatnonzero(pattern == p)
        at = starts[rows]
        for i, (_, texts) in enumerate(pieces):
            if p >> i & 1:
                flat[at] = bases[i] + texts.codes[rows]
                at += 1
    taken = table.take(pa.array(flat, pa.int32()))
    ends = np.frombuffer(taken.buffers()[1], dtype="int64", count=len(taken) + 1,
                         offset=taken.offset * 8)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(ends[starts]),
                                            taken.buffers()[2])


def names_of(flags: Sequence[np.ndarray], names: Sequence[str]) -> pa.Array:
    """Per row, the ``names`` whose flag is set, space-separated; each combination once."""
    mask = bits(flags)
    if len(names) <= 12:  # every combination: a small table
        combos = np.arange(1 << len(names))
        codes = mask
    else:
        codes, combos = pd.factorize(mask)
    texts = pa.array([" ".join(name for i, name in enumerate(names) if int(m) >> i & 1)
                      for m in combos], pa.large_string())
    return texts.take(pa.array(codes))


# The clause table and its renderer.

@dataclass(frozen=True)
class Clause:
    """One clause of a sentence.

    Written on the rows where ``when`` (a boolean column's name) holds and every slot of
    ``text`` outside ``[...]`` is present; after ``join`` when an earlier clause of the
    row's sentence was written. ``rule`` is listed by ``rule_ids`` where ``fires`` holds
    (default: ``when``).
    """

    rule: str
    when: str
    join: str
    text: str
    fires: str | None = None


@dataclass(frozen=True)
class Value:
    """A slot of many distinct values (results, dates): each formatted once, then slotted
    between pieces of glue. Missing: the clause (or ``[...]`` part) is left out. ``only``:
    the name of a boolean column; off it, the value is missing."""

    column: str
    format: Formatter
    only: str | None = None


@dataclass(frozen=True)
class Word:
    """A slot of few distinct values (a unit, a band, a code's words): part of the glue,
    rendered once per shape. Missing: ``missing`` is written instead, or, if None, the
    clause (or ``[...]`` part, or ``Words`` item) is left out."""

    column: str
    format: Formatter
    only: str | None = None
    missing: str | None = None


@dataclass(frozen=True)
class Words:
    """A slot listing, joined by ``sep``, the ``items`` (flag column -> words) whose flag is
    set; ``flags`` names the frame of flag columns. An item's words may hold ``Word``
    slots: an item missing one is left out. Present (maybe empty) wherever its clause is
    written and ``only`` holds."""

    flags: str
    items: Mapping[str, str]
    only: str | None = None
    sep: str = ", "


Slot = Value | Word | Words | str


@dataclass(frozen=True, eq=False)
class _Ref:
    name: str


@dataclass(frozen=True, eq=False)
class _Optional:
    parts: tuple[str | _Ref | _Optional, ...]


Parts = tuple[str | _Ref | _Optional, ...]
_TOKEN = re.compile(r"(\{[^{}]*\}|\[|\])")


def parse(template: str) -> Parts:
    """A template as text, ``_Ref`` (``{name}``) and ``_Optional`` (``[...]``) parts."""
    stack: list[list[str | _Ref | _Optional]] = [[]]
    for token in _TOKEN.split(template):
        if token == "[":
            stack.append([])
        elif token == "]":
            if len(stack) == 1:
                raise ValueError(f"unmatched ']' in {template!r}")
            parts = tuple(stack.pop())
            stack[-1].append(_Optional(parts))
        elif token.startswith("{") and token.endswith("}"):
            stack[-1].append(_Ref(token[1:-1]))
        elif "{" in token or "}" in token:
            raise ValueError(f"unmatched brace in {template!r}")
        elif token:
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError(f"unmatched '[' in {template!r}")
    return tuple(stack[0])


def _refs(parts: Parts, nested: bool = True) -> Iterator[_Ref]:
    """The slot references of ``parts`` (and of their optional parts, if ``nested``)."""
    for part in parts:
        if isinstance(part, _Ref):
            yield part
        elif isinstance(part, _Optional) and nested:
            yield from _refs(part.parts)


def _optionals(parts: Parts) -> Iterator[_Optional]:
    for part in parts:
        if isinstance(part, _Optional):
            yield part
            yield from _optionals(part.parts)


# A clause's text compiled for rendering once per shape: operations on the glue.
_TEXT, _VALUE, _WORD, _LIST, _OPTIONAL = range(5)


def _word(op: tuple[int, list[str | None], str | None], kind: Sequence[int]) -> str | None:
    """A word of a shape: ``op`` is (component, words, shown if missing)."""
    said = op[1][kind[op[0]]]
    return op[2] if said is None else said


def _glue_of(ops: Sequence[tuple[Any, ...]], kind: Sequence[int], glue: list[list[str]],
             slot: int) -> int:
    """Writes ``ops`` for a shape (``kind``: its components) into ``glue[slot]``, moving on
    at each value; returns the slot written last."""
    for op in ops:
        code = op[0]
        if code == _TEXT:
            glue[slot].append(op[1])
        elif code == _VALUE:
            if op[1] <= slot:
                raise ValueError(f"value {op[2]!r} comes twice, or before an earlier value, in "
                                 "one sentence: give each use its own slot name")
            slot = op[1]
            glue[slot].append("")  # the value is written (maybe with no glue after it)
        elif code == _WORD:
            said = op[2][kind[op[1]]]
            glue[slot].append(op[3] if said is None else said)
        elif code == _LIST:
            chosen, listed = kind[op[1]], []
            for bit, item in op[2]:
                if chosen >> bit & 1:
                    said = [p if isinstance(p, str) else _word(p, kind) for p in item]
                    if None not in said:
                        listed.append("".join(said))
            glue[slot].append(op[3].join(listed))
        elif kind[op[1]]:  # _OPTIONAL
            slot = _glue_of(op[2], kind, glue, slot)
    return slot


def render(clauses: Sequence[Clause], slots: Mapping[str, Slot],
           columns: Mapping[str, Any]) -> pa.Array:
    """Every row's sentence (Arrow large strings): its clauses in table order.

    ``columns`` holds, by name, the clauses' conditions, the slots' columns and flag frames.
    Loops run over clauses, slots, shapes and distinct values, never over rows.
    """
    texts = [parse(c.text) for c in clauses]
    when = [as_mask(columns[c.when]) for c in clauses]
    items = {name: {key: parse(words) for key, words in slot.items.items()}
             for name, slot in slots.items() if isinstance(slot, Words)}
    for name, parsed in items.items():
        for words in parsed.values():
            for part in words:
                if isinstance(part, _Optional) or (isinstance(part, _Ref) and not isinstance(
                        slots[part.name], Word | str)):
                    raise ValueError(f"items of {name!r} hold only text and Word slots")

    def only(slot: Value | Word | Words, rows: np.ndarray) -> np.ndarray:
        return rows & as_mask(columns[slot.only]) if slot.only else rows

    # The rows on which each slot may show: those of the clauses naming it.
    users: dict[str, tuple[int, ...]] = {}
    for i, text in enumerate(texts):
        for name in dict.fromkeys(ref.name for ref in _refs(text)):
            users[name] = (*users.get(name, ()), i)
    unions = {ids: reduce(np.logical_or, [when[i] for i in ids])
              for ids in dict.fromkeys(users.values())}
    rows = {name: unions[ids] for name, ids in users.items()}
    flags: dict[str, np.ndarray] = {}
    for name, parsed in items.items():
        if name not in rows:
            continue
        rows[name] = only(slots[name], rows[name])
        frame = columns[slots[name].flags]
        item_flags = [as_mask(frame[key]) for key in parsed]
        flags[name] = np.where(rows[name], bits(item_flags), 0)
        for flag, words in zip(item_flags, parsed.values(), strict=True):
            for word in dict.fromkeys(ref.name for ref in _refs(words)):
                on = rows[name] & flag
                rows[word] = rows[word] | on if word in rows else on

    # Each value and word formatted once per distinct value, on its rows only.
    shown: dict[str, Distinct] = {}
    for name, on in rows.items():
        slot = slots[name]
        if isinstance(slot, Value | Word):
            shown[name] = distinct(pd.Series(columns[slot.column]), slot.format,
                                   only(slot, on))

    def present(name: str) -> np.ndarray | None:
        """The rows with slot ``name`` (None: all; a missing word may have a stand-in)."""
        slot = slots[name]
        if isinstance(slot, Value) or (isinstance(slot, Word) and slot.missing is None):
            return shown[name].valid
        return rows[name] if isinstance(slot, Words) else None

    needs: dict[tuple[str, ...], np.ndarray | None] = {}

    def written(parts: Parts, on: np.ndarray) -> np.ndarray:
        """``on``, less the rows missing a slot that ``parts`` need."""
        names = tuple(dict.fromkeys(ref.name for ref in _refs(parts, nested=False)))
        if names not in needs:
            masks = [mask for mask in map(present, names) if mask is not None]
            needs[names] = reduce(np.logical_and, masks) if masks else None
        return on if needs[names] is None else on & needs[names]

    # A row's shape: which clauses and optional parts it writes, and its words' codes.
    components: dict[str, np.ndarray] = {}
    optional: dict[int, str] = {}
    for i, (text, on) in enumerate(zip(texts, when, strict=True)):
        components[f"clause {i}"] = clause = written(text, on)
        parents = {id(part): clause for part in text if isinstance(part, _Optional)}
        for part in _optionals(text):
            optional[id(part)] = key = f"optional {len(optional)}"
            components[key] = written(part.parts, parents[id(part)])
            parents.update({id(sub): components[key] for sub in part.parts
                            if isinstance(sub, _Optional)})
    for name, texts_of in shown.items():
        if isinstance(slots[name], Word):
            components[f"word {name}"] = texts_of.codes
    for name, mask in flags.items():
        components[f"words {name}"] = mask
    shape, kinds = shapes(list(components.values()))
    at = {key: i for i, key in enumerate(components)}

    # Clause texts as operations on the glue, with every lookup resolved.
    values = list(dict.fromkeys(ref.name for text in texts for ref in _refs(text)
                                if isinstance(slots[ref.name], Value)))
    number_of = {name: k for k, name in enumerate(values, start=1)}

    def word_op(name: str) -> tuple[int, list[str | None], str | None]:
        slot = slots[name]
        assert isinstance(slot, Word)
        return at[f"word {name}"], shown[name].words, slot.missing

    def compiled(parts: Parts) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = []
        for part in parts:
            slot = slots[part.name] if isinstance(part, _Ref) else None
            if isinstance(part, str) or isinstance(slot, str):
                said = part if isinstance(part, str) else slot
                if ops and ops[-1][0] == _TEXT:
                    ops[-1] = (_TEXT, ops[-1][1] + said)
                else:
                    ops.append((_TEXT, said))
            elif isinstance(part, _Optional):
                ops.append((_OPTIONAL, at[optional[id(part)]], compiled(part.parts)))
            elif isinstance(slot, Value):
                ops.append((_VALUE, number_of[part.name], part.name))
            elif isinstance(slot, Words):
                listed = [(bit, [p if isinstance(p, str) else slots[p.name]
                                 if isinstance(slots[p.name], str) else word_op(p.name)
                                 for p in words])
                          for bit, words in enumerate(items[part.name].values())]
                ops.append((_LIST, at[f"words {part.name}"], listed, slot.sep))
            else:
                ops.append((_WORD, *word_op(part.name)))
        return ops

    program = [(at[f"clause {i}"], clause.join, compiled(text))
               for i, (clause, text) in enumerate(zip(clauses, texts, strict=True))]
    rendered: list[list[str]] = []  # per shape, the glue after each value (0: opening)
    wrote: list[list[bool]] = []  # per shape, whether each value is written
    for kind in kinds:
        glue: list[list[str]] = [[] for _ in range(len(values) + 1)]
        slot = -1
        for key, join, ops in program:
            if kind[key]:
                if slot >= 0:
                    glue[slot].append(join)
                slot = _glue_of(ops, kind, glue, max(slot, 0))
        rendered.append(["".join(g) for g in glue])
        wrote.append([bool(g) for g in glue])

    def per_shape(values: list[Any], dtype: str) -> np.ndarray:
        return np.array(values, dtype=dtype)[shape]

    def glue_after(slot: int) -> Distinct:
        """The glue after value ``slot`` (0: the opening), per row."""
        seen: dict[str, int] = {}
        codes = [seen.setdefault(r[slot], len(seen)) for r in rendered]
        return Distinct(per_shape(codes, "int32"), pa.array(list(seen), pa.string()))

    # Pieces: the opening glue, then each value written with the glue after it; the
    # opening and the first value (most rows) are paired too.
    opening = glue_after(0)
    has_opening = per_shape([r[0] != "" for r in rendered], "bool")
    if not values:
        return assemble([(has_opening, opening)])
    pieces = []
    for k, name in enumerate(values, start=1):
        on = per_shape([w[k] for w in wrote], "bool")
        pieces.append((on, pair(shown[name], glue_after(k), on)))
    (first_on, first), rest = pieces[0], pieces[1:]
    return assemble([(has_opening & ~first_on, opening),
                     (first_on, pair(opening, first, first_on)), *rest])


def rule_ids(clauses: Sequence[Clause], columns: Mapping[str, Any]) -> pa.Array:
    """Per row, the ``rule`` of every clause whose ``fires`` (or ``when``) holds, in order."""
    return names_of([as_mask(columns[c.fires or c.when]) for c in clauses],
                    [c.rule for c in clauses])
