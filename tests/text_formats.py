"""Tiny text corpora written in the exact on-disk formats of the paper's NLP data (for reader and preset tests)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "dull", "poor", "weak"]
FILLER = ["the", "film", "is", "a", "story", "very", "and", "It"]
NEWSGROUPS = ["alt.atheism", "comp.graphics", "sci.space"]


def _words(rng: random.Random, pool: list[str], n: int) -> list[str]:
    return [rng.choice(pool) for _ in range(n)]


def _tree(words: list[str], label: int) -> str:
    """A right-branching PTB tree over ``words`` with root ``label`` (SST's trees format)."""
    tree = f"(2 {words[-1]})"
    for w in reversed(words[:-1]):
        tree = f"(2 (2 {w}) {tree})"
    return f"({label}{tree[2:]}" if tree.startswith("(2 (") else f"({label} {words[0]})"


def write_sst(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> None:
    """``sst/trees/{train,dev,test}.txt``: one PTB tree per line, root labels 0-4 (2: neutral)."""
    rng = random.Random(seed)
    folder = root / "sst" / "trees"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (sizes or {"train": 40, "dev": 10, "test": 20}).items():
        lines = []
        for i in range(n):
            label = (4, 3, 2, 1, 0)[i % 5]
            pool = POSITIVE if label > 2 else NEGATIVE if label < 2 else FILLER
            lines.append(_tree(_words(rng, FILLER, 3) + _words(rng, pool, 2), label))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_20ng(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 0, reformatted: bool = False) -> None:
    """Cachopo's ``20ng-{train,test}-no-short.txt`` (``name<TAB>words``), or the reference's CSV reformat."""
    rng = random.Random(seed)
    folder = root / "20newsgroups"
    folder.mkdir(parents=True, exist_ok=True)
    from oe_lightning.data.text.corpora import NEWSGROUPS as ALL

    for split, n in (("train", n_train), ("test", n_test)):
        rows = [(NEWSGROUPS[i % 3], " ".join(_words(rng, FILLER + [NEWSGROUPS[i % 3].split(".")[-1]] * 4, 120)))
                for i in range(n)]
        if reformatted:
            with (folder / f"20ng-{split}.txt").open("w", newline="") as f:
                csv.writer(f).writerows([ALL.index(name), text] for name, text in rows)
        else:
            (folder / f"20ng-{split}-no-short.txt").write_text("".join(f"{a}\t{b}\n" for a, b in rows))


def write_trec(root: Path, seed: int = 0) -> None:
    """``trec/train_5500.label`` and ``trec/TREC_10.label``: ``COARSE:fine question`` per line (latin bytes)."""
    rng = random.Random(seed)
    folder = root / "trec"
    folder.mkdir(parents=True, exist_ok=True)
    labels = ["DESC:manner", "HUM:ind", "LOC:city", "NUM:date"]
    for name, n in (("train_5500.label", 40), ("TREC_10.label", 12)):
        lines = [f"{labels[i % 4]} {' '.join(_words(rng, ['How', 'who', 'where', 'when', 'did', 'the', 'city'], 5))} ?"
                 for i in range(n)]
        lines[0] = "DESC:manner How d\xf0id serfdom develop ?"  # byte 0xF0: TREC's reader turns it into a space
        (folder / name).write_bytes("\n".join(lines).encode("latin-1") + b"\n")


WIKI_TOKENS = (" \n = Valkyria Chronicles III = \n \n"
               " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game . It was "
               "released in January 2011 in Japan . @ odd start . 1999 was a year . Short one .\n"
               " \n = = Gameplay = = \n \n"
               " The game has 3 @.@ 5 modes and the player controls a squad of soldiers . Ok ! Why would it end ?\n")


def write_wikitext(root: Path, version: str = "wikitext-2", copies: int = 20) -> None:
    """``<version>/wiki.train.tokens`` as released (headings ``= x =``, blank lines ``' '``)."""
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wiki.train.tokens").write_text(WIKI_TOKENS * copies, encoding="utf-8")


def write_ood_sets(root: Path, n: int = 30, ewt: bool = True, seed: int = 0) -> None:
    """Every OOD set of the reference's text evaluation, each in its public format."""
    rng = random.Random(seed)
    words = ["a", "man", "dog", "runs", "in", "the", "park", "news", "report", "today"]
    snli = root / "snli" / "snli_1.0"
    snli.mkdir(parents=True, exist_ok=True)
    pairs = [{"gold_label": "-" if i == 0 else "neutral", "sentence1": "x y",
              "sentence2": " ".join(_words(rng, words, 6))} for i in range(n + 1)]
    (snli / "snli_1.0_test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    for sub in ("pos", "neg"):
        folder = root / "imdb" / "aclImdb" / "test" / sub
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            (folder / f"{i}_7.txt").write_text(" ".join(_words(rng, words, 12)) + "<br /><br />more")
    (root / "multi30k").mkdir(exist_ok=True)
    with (root / "multi30k" / "train.txt").open("w", newline="") as f:
        csv.writer(f).writerows([" ".join(_words(rng, words, 7)) + " , here"] for _ in range(n))
    (root / "wmt16").mkdir(exist_ok=True)
    (root / "wmt16" / "wmt16_sentences").write_text("".join(" ".join(_words(rng, words, 9)) + " , too\n"
                                                            for _ in range(n)))
    (root / "yelp_review_full_csv").mkdir(exist_ok=True)
    with (root / "yelp_review_full_csv" / "test.csv").open("w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows([str(i % 5 + 1), " ".join(_words(rng, words, 10)) + ", ok"]
                                                       for i in range(n))
    if ewt:
        for domain in ("answers", "email", "newsgroup", "reviews", "weblog"):
            folder = root / "eng_web_tbk" / domain / "conll"
            folder.mkdir(parents=True, exist_ok=True)
            sentences = ["\n".join(f"{j + 1}\t{w}\t{w}\tNN\tNN\t_\t0\troot\t_\t_"
                                   for j, w in enumerate(_words(rng, words, 5))) for _ in range(n)]
            (folder / f"{domain}_penntrees.dev.conll").write_text("\n\n".join(sentences) + "\n\n")
