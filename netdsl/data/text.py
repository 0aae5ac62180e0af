"""Token-sequence datasets: CoNLL-style tagging files and label-TAB-text classification files.

A vocabulary is built from the training split only: id 0 is the padding token, id 1 the
unknown token, then the words by falling frequency (ties alphabetically). Words of the
other splits that the training split lacks become the unknown token. Tags and text
labels also come from the training split; one the training split lacks is an error.

Batches are padded per batch (pad_batch), at the end of each sequence, with the (N,)
lengths that the model takes (docs/ir.md, variable-length sequence batches): recurrences,
select_last and the loss ignore the padding. front=True (padding first) is kept for callers
that have no lengths to give.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, check_bytes, check_not_empty, require_regular, shown

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def _lines(path, max_bytes):
    path = Path(path)
    try:
        require_regular(path)
        size = os.stat(path).st_size
        check_bytes(path, 8 * size, max_bytes)  # a token id takes 8 bytes, a token >= 2 characters
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a word
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{shown(path)}: is a directory, not a text file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{shown(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{shown(path)}: cannot read: {e.strerror or e}") from None
    # Only \n (and \r\n) end a line, as editors count lines for the numbers in messages;
    # str.splitlines would also split at \f, \x1c, \u2028 ...
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def read_conll(path, limit: int | None = None, max_bytes: int | None = None, tagged: bool = True):
    """[(tokens, tags, line of the first token)]: a token and a tag per line (first and last
    whitespace-separated column, as in CoNLL-2000/2003), a blank line between sentences."""
    sents, toks, tags, start = [], [], [], None
    for lineno, line in enumerate(_lines(path, max_bytes), 1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if toks:
                sents.append((toks, tags, start))
                toks, tags = [], []
                if limit is not None and len(sents) >= limit:
                    return sents
            continue
        if tagged and len(fields) < 2:
            raise DataError(f"{shown(path)}:{lineno}: expected a token and a tag, found one field "
                            f"{fields[0]!r}")
        if not toks:
            start = lineno
        toks.append(fields[0])
        tags.append(fields[-1] if tagged else None)
    if toks:
        sents.append((toks, tags, start))
    return sents[:limit] if limit is not None else sents


def read_labelled_text(path, limit: int | None = None, max_bytes: int | None = None):
    """[(label, tokens, line)]: one sample per line, `label<TAB>text`, text split on whitespace."""
    out = []
    for lineno, line in enumerate(_lines(path, max_bytes), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{shown(path)}:{lineno}: expected 'label<TAB>text', found no tab")
        label, text = line.split("\t", 1)
        toks = text.split()
        if not label.strip():
            raise DataError(f"{shown(path)}:{lineno}: empty label")
        if not toks:
            raise DataError(f"{shown(path)}:{lineno}: empty text")
        out.append((label.strip(), toks, lineno))
        if limit is not None and len(out) >= limit:
            break
    return out


def read_sentences(path, max_bytes: int | None = None):
    """[(tokens, line)]: one whitespace-tokenised sentence per non-blank line, for predict."""
    return [(line.split(), n) for n, line in enumerate(_lines(path, max_bytes), 1) if line.strip()]


def build_vocab(sentences, max_size: int | None = None) -> tuple:
    counts = Counter(t for s in sentences for t in s)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[:max(max_size - 2, 0)]
    return (PAD, UNK, *words)


def encode(sentences, vocab) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    out = np.empty(len(sentences), object)
    for i, s in enumerate(sentences):
        out[i] = np.array([index.get(t, UNK_ID) for t in s], np.int64)
    return out


def pad_batch(seqs, pad_id: int = PAD_ID, front: bool = False):
    """(N, T) int64 padded to the batch's longest sequence, and the (N,) lengths."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    t = int(lengths.max()) if len(seqs) else 0
    out = np.full((len(seqs), t), pad_id, np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            if front:
                out[i, t - len(s):] = s
            else:
                out[i, :len(s)] = s
    return out, lengths


def _label_ids(labels, names, path, lines):
    index = {c: i for i, c in enumerate(names)}
    out = []
    for lab, line in zip(labels, lines):
        if lab not in index:
            raise DataError(f"{shown(path)}:{line}: label {lab!r} does not occur in the training split")
        out.append(index[lab])
    return out


def _sorted_names(names) -> list:
    names = set(names)
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_conll(files: dict, limits: dict | None = None, max_bytes: int | None = None,
               vocab_size: int | None = None, vocab=None, names=None) -> Dataset:
    """files: split -> CoNLL file. Tags are the training split's, sorted; `vocab` and
    `names` (tags) fix the mappings instead (those a weights file was trained with)."""
    limits = limits or {}
    read = {s: read_conll(p, limits.get(s), max_bytes) for s, p in files.items()}
    for s, sents in read.items():
        check_not_empty(len(sents), shown(files[s]), s)
    vocab = tuple(vocab) if vocab is not None else build_vocab([t for t, _, _ in read["train"]], vocab_size)
    tags = list(names) if names is not None else _sorted_names({g for _, ts, _ in read["train"] for g in ts})
    index = {g: i for i, g in enumerate(tags)}
    out = {}
    for s, sents in read.items():
        y = np.empty(len(sents), object)
        for i, (toks, ts, line) in enumerate(sents):
            for k, g in enumerate(ts):
                if g not in index:
                    raise DataError(f"{shown(files[s])}:{line + k}: tag {g!r} does not occur in the "
                                    f"training split ({shown(files['train'])})")
            y[i] = np.array([index[g] for g in ts], np.int64)
        out["x_" + s] = encode([t for t, _, _ in sents], vocab)
        out["y_" + s] = y
    return Dataset(source=Path(files["train"]), origin={s: shown(p) for s, p in files.items()},
                   files=tuple(files.values()), kind="tags", classes=tuple(tags), vocab=vocab, **out)


def load_labelled_text(files: dict, limits: dict | None = None, max_bytes: int | None = None,
                       vocab_size: int | None = None, vocab=None, names=None) -> Dataset:
    """files: split -> label<TAB>text file. Integer labels are class ids; names are sorted.
    `vocab` and `names` fix the mappings instead (those a weights file was trained with)."""
    limits = limits or {}
    read = {s: read_labelled_text(p, limits.get(s), max_bytes) for s, p in files.items()}
    for s, rows in read.items():
        check_not_empty(len(rows), shown(files[s]), s)
    vocab = tuple(vocab) if vocab is not None else build_vocab([t for _, t, _ in read["train"]], vocab_size)
    train_labels = {lab for lab, _, _ in read["train"]}
    numeric = names is None and all(lab.isdigit() for lab in train_labels)
    names = None if numeric else list(names) if names is not None else _sorted_names(train_labels)
    out = {}
    for s, rows in read.items():
        labels, lines = [lab for lab, _, _ in rows], [n for _, _, n in rows]
        if numeric:
            for lab, line in zip(labels, lines):
                if not lab.isdigit():
                    raise DataError(f"{shown(files[s])}:{line}: label {lab!r} is not a class number "
                                    f"(the training split's labels are numbers)")
            y = [int(lab) for lab in labels]
        else:
            y = _label_ids(labels, names, files[s], lines)
        out["x_" + s] = encode([t for _, t, _ in rows], vocab)
        out["y_" + s] = np.array(y, np.int64)
    return Dataset(source=Path(files["train"]), origin={s: shown(p) for s, p in files.items()},
                   files=tuple(files.values()), kind="text", classes=tuple(names) if names else None, vocab=vocab, **out)
