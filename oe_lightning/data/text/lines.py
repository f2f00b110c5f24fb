"""Texts held in memory with their labels, and the plain formats a user hands over: a file with one text per
line, a folder of ``.txt`` files (one text per line; class sub-folders or none)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from oe_lightning.errors import OEUserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class TextLines(Dataset):
    """Texts with labels (``-1``: unlabelled, e.g. OE or OOD text), read through ``transform`` (the family's
    encoder: text → token indices); ``transform=None`` yields the text itself."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int] | Tensor | None = None,
                 transform: Callable | None = None, source: str = "", classes: Sequence[str] | None = None):
        self.texts = list(texts)
        self.labels = (torch.as_tensor(labels, dtype=torch.long) if labels is not None
                       else torch.full((len(self.texts),), -1, dtype=torch.long))
        if len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        self.transform, self.source = transform, source
        if classes is not None:
            self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        text = self.texts[i]
        return (self.transform(text) if self.transform is not None else text), int(self.labels[i])


def sentences(text: str, min_words: int = 3, max_words: int = 60) -> list[str]:
    """The sentences of ``text`` (split after ``.``, ``!`` or ``?``) with ``min_words`` to ``max_words``
    whitespace-separated words (the reference's WikiText rule counts ``split(' ')`` parts; the embedded corpora
    are not space-tokenised, so words here)."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip()):
        n = len(sentence.split())
        if min_words <= n <= max_words:
            out.append(sentence.strip())
    return out


def numbered_lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of each non-empty line of a UTF-8 text file, without its line end."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise OEUserError(f"No text file at {str(path)!r}; give a UTF-8 file with one text per line.")
    try:
        with path.open(encoding="utf-8") as f:
            return [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError as e:
        raise OEUserError(f"{str(path)!r} is not UTF-8 text (byte {e.start}); re-encode it as UTF-8.") from None


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, without their line ends."""
    return [line for _, line in numbered_lines(path)]


def text_file(path: str | Path, transform: Callable | None = None, name: str = "") -> TextLines:
    """An unlabelled set: one text per non-empty line of ``path``."""
    texts = read_lines(path)
    if not texts:
        raise OEUserError(f"The text file {str(path)!r} has no non-empty line; put one text per line in it.")
    return TextLines(texts, None, transform, source=name or str(path))


def text_folder(root: str | Path, transform: Callable | None = None, name: str = "") -> TextLines:
    """The ``.txt`` files under ``root``, one text per non-empty line: labelled by class sub-folder (sorted
    names) when every file lies in one, else unlabelled. Regular files only, no folder listed twice
    (:func:`~oe_lightning.data.files.list_files`)."""
    from oe_lightning.data.files import list_files, warn_skipped

    root = Path(root).expanduser()
    if not root.is_dir():
        raise OEUserError(f"No folder at {str(root)!r}; give a folder of .txt files (one text per line).")
    listing = list_files(root, lambda name: name.lower().endswith(".txt"), hidden=False)
    warn_skipped([listing], f"text folder {root}")
    files = sorted(listing.files)
    if not files:
        raise OEUserError(f"{str(root)!r} holds no .txt files; put one text per line in .txt files there.")
    nested = all(p.parent != root for p in files)
    classes = sorted({p.relative_to(root).parts[0] for p in files}) if nested else None
    texts, labels = [], []
    for p in files:
        lines = read_lines(p)
        texts += lines
        labels += [classes.index(p.relative_to(root).parts[0]) if classes else -1] * len(lines)
    if not texts:
        raise OEUserError(f"The .txt files under {str(root)!r} hold no non-empty line; put one text per line in them.")
    return TextLines(texts, labels, transform, source=name or str(root), classes=classes)
