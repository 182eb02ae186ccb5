"""Readers and writers for the three public Twitter-2015/2017 formats.

Formats (see ``../shared/data/twitter/SOURCES.md``):

* ``tombert``: ``{train,dev,test}.tsv``, header + ``index \\t label \\t image_id \\t
  sentence-with-$T$ \\t target``, one row per aspect, label 0/1/2 = NEG/NEU/POS, the rows of one
  tweet consecutive.
* ``tombert_txt``: ``{train,dev,test}.txt``, 4 lines per aspect: sentence-with-$T$ / target /
  polarity -1/0/1 / image_id.
* ``vlp``: ``{train,dev,test}.json``, a JSON list of ``{"words", "image_id", "aspects": [{"from",
  "to" (exclusive), "polarity", "term"}]}``.
* ``conll``: ``{train,valid,test}.txt``, blocks ``IMGID:<id>`` + ``token \\t joint-tag [\\t aux]``
  with joint tags ``O``/``B-POS``/``I-POS``/... separated by blank lines.

Every reader yields :class:`~iea.data.records.Tweet` or :class:`Reject` items; it never raises on
bad content, so the caller decides between stopping (``file:line: reason``) and quarantining.
Tweet tokens are rebuilt as ``before-$T$ + target + after-$T$`` split on whitespace.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from iea.data.records import POLARITIES, Aspect, Tweet, base_id, normalize_image_id

FORMATS: tuple[str, ...] = ("tombert", "tombert_txt", "vlp", "conll")
_SPLIT_FILES: dict[str, dict[str, str]] = {
    "tombert": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
    "tombert_txt": {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
    "vlp": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    "conll": {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"},
}
_TSV_LABELS = {"0": "NEG", "1": "NEU", "2": "POS"}
_TXT_LABELS = {"-1": "NEG", "0": "NEU", "1": "POS"}
_CONLL_TAGS = {"O"} | {f"{b}-{p}" for b in "BI" for p in POLARITIES}
_MARK = "$T$"


@dataclass(frozen=True)
class Reject:
    """A record that could not be read: where it is, why, and its raw text (nothing is lost)."""

    file: str
    line: int
    reason: str
    raw: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}


def split_file(fmt: str, src: Path, split: str) -> Path:
    """The file that holds ``split`` (train/dev/test) of format ``fmt`` under ``src``."""
    if fmt not in _SPLIT_FILES:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return Path(src) / _SPLIT_FILES[fmt][split]


def read_file(fmt: str, path: Path) -> list[Tweet | Reject]:
    """Read one split file; tweets get their canonical ids (see :class:`Tweet`)."""
    readers = {
        "tombert": _read_tsv,
        "tombert_txt": _read_txt,
        "vlp": _read_vlp,
        "conll": _read_conll,
    }
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return list(assign_ids(readers[fmt](Path(path))))


def assign_ids(items: Iterable[Tweet | Reject]) -> Iterator[Tweet | Reject]:
    """Give each tweet its id; the n-th repeat (n >= 2) of a tweet in one file gets ``-n``."""
    seen: Counter[str] = Counter()
    for item in items:
        if isinstance(item, Reject):
            yield item
            continue
        bid = base_id(item.image_id, item.tokens)
        seen[bid] += 1
        tid = bid if seen[bid] == 1 else f"{bid}-{seen[bid]}"
        yield Tweet(tid, item.tokens, item.image_id, tuple(sorted(item.aspects)))


# --------------------------------------------------------------------------- line decoding


def _lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """Yield ``(line number, text or None if not UTF-8, reason)`` for every line of ``path``."""
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield no, raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield no, None, f"invalid UTF-8 at byte {e.start}: {raw[e.start : e.start + 4]!r}"


def _from_marked(sentence: str, target: str) -> tuple[tuple[str, ...], int, int] | str:
    """Tokens and word span from a ``$T$`` sentence, or the reason it cannot be read."""
    count = sentence.count(_MARK)
    if count != 1:
        return f"sentence must contain the target marker $T$ exactly once, found {count}"
    target_tokens = target.split()
    if not target_tokens:
        return "empty target"
    before, after = sentence.split(_MARK)
    start = len(before.split())
    tokens = tuple(before.split() + target_tokens + after.split())
    return tokens, start, start + len(target_tokens)


class _TweetGrouper:
    """Merges consecutive one-aspect rows of the same tweet (TomBERT formats)."""

    def __init__(self) -> None:
        self._key: tuple[str, tuple[str, ...]] | None = None
        self._aspects: list[Aspect] = []

    def add(self, image_id: str, tokens: tuple[str, ...], aspect: Aspect) -> Tweet | None:
        """Add a row; returns the previous tweet when this row starts a new one."""
        key = (image_id, tokens)
        spans = {(a.start, a.end) for a in self._aspects}
        if key == self._key and (aspect.start, aspect.end) not in spans:
            self._aspects.append(aspect)
            return None
        done = self.flush()
        self._key, self._aspects = key, [aspect]
        return done

    def flush(self) -> Tweet | None:
        if self._key is None:
            return None
        image_id, tokens = self._key
        tweet = Tweet("", tokens, image_id, tuple(self._aspects))
        self._key, self._aspects = None, []
        return tweet


def _read_tsv(path: Path) -> Iterator[Tweet | Reject]:
    group = _TweetGrouper()
    for no, line, bad in _lines(path):
        if no == 1:  # header; test.tsv's is mislabelled but the rows are complete
            continue
        if line is None:
            yield Reject(str(path), no, bad, "")
            continue
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            yield Reject(str(path), no, f"expected 5 tab-separated columns, got {len(cols)}", line)
            continue
        _, label, image_id, sentence, target = cols
        if label not in _TSV_LABELS:
            yield Reject(str(path), no, f"unknown label {label!r} (expected 0/1/2)", line)
            continue
        if not image_id.strip():
            yield Reject(str(path), no, "empty image id", line)
            continue
        parsed = _from_marked(sentence, target)
        if isinstance(parsed, str):
            yield Reject(str(path), no, parsed, line)
            continue
        tokens, start, end = parsed
        aspect = Aspect(start, end, _TSV_LABELS[label])
        done = group.add(normalize_image_id(image_id), tokens, aspect)
        if done is not None:
            yield done
    done = group.flush()
    if done is not None:
        yield done


def _read_txt(path: Path) -> Iterator[Tweet | Reject]:
    group = _TweetGrouper()
    block: list[tuple[int, str | None, str]] = []
    for item in _lines(path):
        block.append(item)
        if len(block) < 4:
            continue
        first = block[0][0]
        raw = "\n".join(text or "" for _, text, _ in block)
        undecodable = [(no, why) for no, text, why in block if text is None]
        block_lines = [text or "" for _, text, _ in block]
        block = []
        if undecodable:
            no, why = undecodable[0]
            yield Reject(str(path), no, why, raw)
            continue
        sentence, target, label, image_id = block_lines
        if label.strip() not in _TXT_LABELS:
            yield Reject(str(path), first + 2, f"unknown polarity {label!r} (expected -1/0/1)", raw)
            continue
        if not image_id.strip():
            yield Reject(str(path), first + 3, "empty image id", raw)
            continue
        parsed = _from_marked(sentence, target)
        if isinstance(parsed, str):
            yield Reject(str(path), first, parsed, raw)
            continue
        tokens, start, end = parsed
        done = group.add(
            normalize_image_id(image_id), tokens, Aspect(start, end, _TXT_LABELS[label.strip()])
        )
        if done is not None:
            yield done
    if any(text and text.strip() for _, text, _ in block):
        raw = "\n".join(text or "" for _, text, _ in block)
        yield Reject(str(path), block[0][0], f"incomplete record: {len(block)} of 4 lines", raw)
    done = group.flush()
    if done is not None:
        yield done


def _read_vlp(path: Path) -> Iterator[Tweet | Reject]:
    data = Path(path).read_bytes()
    try:
        text, check_encoding = data.decode("utf-8"), False
    except UnicodeDecodeError:  # keep the bad bytes as surrogates; items holding them are rejected
        text, check_encoding = data.decode("utf-8", errors="surrogateescape"), True
    seen = [0, 1]  # (position, its line): positions only move forward, so count incrementally

    def line_of(pos: int) -> int:
        if pos < seen[0]:
            seen[:] = [0, 1]
        seen[1] += text.count("\n", seen[0], pos)
        seen[0] = pos
        return seen[1]

    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        yield Reject(
            str(path),
            line_of(pos),
            "bad JSON: expected a top-level list '['",
            text[pos : pos + 200],
        )
        return
    pos = _skip_ws(text, pos + 1)
    index = 0
    while pos < len(text) and text[pos] != "]":
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            # Resynchronise at the next item that starts like a record; keep the skipped text.
            nxt = _next_object(text, e.pos)
            yield Reject(
                str(path), line_of(pos), f"bad JSON in item {index}: {e.msg}", text[pos:nxt]
            )
            pos, index = nxt, index + 1
            continue
        raw = text[pos:end]
        item = _vlp_record(obj, check_encoding)
        if isinstance(item, str):
            yield Reject(str(path), line_of(pos), f"item {index}: {item}", raw)
        else:
            yield item
        index += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            nxt = _next_object(text, pos)
            yield Reject(
                str(path),
                line_of(pos),
                f"bad JSON after item {index - 1}: expected ',' or ']'",
                text[pos:nxt],
            )
            pos = nxt
    if pos >= len(text):
        yield Reject(str(path), line_of(len(text)), "bad JSON: the list is not closed with ']'", "")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _next_object(text: str, pos: int) -> int:
    """Position of the next ``{"words"`` record start after ``pos`` (or the closing ']')."""
    found = re.compile(r'\{\s*"words"').search(text, pos + 1)
    if found:
        return found.start()
    close = text.rfind("]")
    return close if close > pos else len(text)


def _vlp_record(obj: object, check_encoding: bool) -> Tweet | str:
    if not isinstance(obj, dict):
        return f"expected an object, got {type(obj).__name__}"
    if check_encoding and any(_has_surrogate(v) for v in _strings(obj)):
        return "invalid UTF-8 in a string value"
    words, image_id, aspects = obj.get("words"), obj.get("image_id"), obj.get("aspects")
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words) or not words:
        return "'words' must be a non-empty list of non-empty strings"
    if not isinstance(image_id, str) or not image_id.strip():
        return "'image_id' must be a non-empty string"
    if not isinstance(aspects, list):
        return "'aspects' must be a list"
    out = []
    for k, a in enumerate(aspects):
        if not isinstance(a, dict):
            return f"aspect {k}: expected an object"
        start, end, pol = a.get("from"), a.get("to"), a.get("polarity")
        if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool):
            return f"aspect {k}: 'from'/'to' must be integers"
        if not 0 <= start < end <= len(words):
            return f"aspect {k}: span [{start}, {end}) outside the {len(words)} tokens"
        if pol not in POLARITIES:
            return f"aspect {k}: unknown polarity {pol!r} (expected POS/NEU/NEG)"
        term = a.get("term")
        if term is not None and list(term) != words[start:end]:
            got = words[start:end]
            return f"aspect {k}: term {term!r} does not match words[{start}:{end}] {got!r}"
        out.append(Aspect(start, end, pol))
    return Tweet("", tuple(words), normalize_image_id(image_id), tuple(out))


def _strings(obj: object) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _read_conll(path: Path) -> Iterator[Tweet | Reject]:
    block: list[tuple[int, str | None, str]] = []
    for item in _lines(path):
        no, text, _ = item
        if text is not None and not text.strip():
            if block:
                yield _conll_block(path, block)
                block = []
            continue
        block.append(item)
    if block:
        yield _conll_block(path, block)


def _conll_block(path: Path, block: list[tuple[int, str | None, str]]) -> Tweet | Reject:
    first = block[0][0]
    raw = "\n".join(text or "" for _, text, _ in block)
    for no, text, why in block:
        if text is None:
            return Reject(str(path), no, why, raw)
    head = block[0][1] or ""
    if not head.startswith("IMGID:") or not head[6:].strip():
        return Reject(str(path), first, "block does not start with 'IMGID:<id>'", raw)
    tokens: list[str] = []
    aspects: list[Aspect] = []
    open_pol: str | None = None
    for no, text, _ in block[1:]:
        cols = (text or "").split("\t")
        if len(cols) not in (2, 3):
            return Reject(
                str(path), no, f"expected 2 or 3 tab-separated columns, got {len(cols)}", raw
            )
        token, tag = cols[0], cols[1]
        if not token:
            return Reject(str(path), no, "empty token", raw)
        if tag not in _CONLL_TAGS:
            return Reject(str(path), no, f"unknown tag {tag!r}", raw)
        if tag.startswith("I-"):
            if open_pol != tag[2:]:
                return Reject(str(path), no, f"{tag} does not continue a B-/I-{tag[2:]} span", raw)
            aspects[-1] = Aspect(aspects[-1].start, len(tokens) + 1, open_pol)
        elif tag.startswith("B-"):
            open_pol = tag[2:]
            aspects.append(Aspect(len(tokens), len(tokens) + 1, open_pol))
        else:
            open_pol = None
        tokens.append(token)
    if not tokens:
        return Reject(str(path), first, "block has no tokens", raw)
    return Tweet("", tuple(tokens), normalize_image_id(head[6:]), tuple(aspects))


# --------------------------------------------------------------------------- writers


def write_file(fmt: str, path: Path, tweets: Iterable[Tweet]) -> None:
    """Write tweets in a public format (used by the synthetic generator and round-trip tests).

    Raises:
        ValueError: a tweet that the format cannot carry (overlapping aspects for CoNLL, a
            whitespace inside a token for the ``$T$`` formats).
    """
    tweets = list(tweets)
    writers = {
        "tombert": _write_tsv,
        "tombert_txt": _write_txt,
        "vlp": _write_vlp,
        "conll": _write_conll,
    }
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(writers[fmt](tweets), encoding="utf-8")


def _marked(t: Tweet, a: Aspect) -> tuple[str, str]:
    if any(not tok or any(c.isspace() for c in tok) for tok in t.tokens):
        raise ValueError(f"tweet {t.id}: tokens with whitespace cannot be written with $T$")
    sentence = " ".join([*t.tokens[: a.start], _MARK, *t.tokens[a.end :]])
    return sentence, " ".join(t.tokens[a.start : a.end])


def _write_tsv(tweets: list[Tweet]) -> str:
    inv = {v: k for k, v in _TSV_LABELS.items()}
    rows = ["index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"]
    for t in tweets:
        for a in t.aspects:
            sentence, target = _marked(t, a)
            rows.append(f"{len(rows)}\t{inv[a.polarity]}\t{t.image_id}\t{sentence}\t{target}")
    return "\n".join(rows) + "\n"


def _write_txt(tweets: list[Tweet]) -> str:
    inv = {v: k for k, v in _TXT_LABELS.items()}
    out = []
    for t in tweets:
        for a in t.aspects:
            sentence, target = _marked(t, a)
            out += [sentence, target, inv[a.polarity], t.image_id]
    return "\n".join(out) + "\n"


def _write_vlp(tweets: list[Tweet]) -> str:
    items = [
        {
            "words": list(t.tokens),
            "image_id": t.image_id,
            "aspects": [
                {**a.to_json(), "term": list(t.tokens[a.start : a.end])} for a in t.aspects
            ],
            "opinions": [{"term": []}],
        }
        for t in tweets
    ]
    return json.dumps(items, ensure_ascii=False)


def _write_conll(tweets: list[Tweet]) -> str:
    blocks = []
    for t in tweets:
        tags = ["O"] * len(t.tokens)
        for a in t.aspects:
            if any(tag != "O" for tag in tags[a.start : a.end]):
                raise ValueError(f"tweet {t.id}: overlapping aspects cannot be written as CoNLL")
            tags[a.start : a.end] = [f"B-{a.polarity}"] + [f"I-{a.polarity}"] * (
                a.end - a.start - 1
            )
        stem = t.image_id.rsplit(".", 1)[0]
        lines = [f"IMGID:{stem}"] + [
            f"{tok}\t{tag}\t{tag[:2] + 'AE' if tag != 'O' else 'O'}"
            for tok, tag in zip(t.tokens, tags, strict=True)
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
