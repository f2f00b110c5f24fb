"""The text corpora of the paper's NLP experiments, each read from its public on-disk format as the reference
reads it (hendrycks/outlier-exposure NLP_classification/, with torchtext 0.3's readers; file:line cited).

ID sets keep the reference's class order: torchtext's label Field numbers labels by training-set frequency,
ties alphabetical (the reference subtracts its ``<unk>``: ``batch.label - 1``, train.py:140).
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from oe_lightning.data.missing import missing_dataset
from oe_lightning.data.text.lines import TextLines, read_lines
from oe_lightning.errors import OEUserError

csv.field_size_limit(1 << 24)  # one 20 Newsgroups post or Yelp review per row; far above any of them

NEWSGROUPS = ("alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
              "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
              "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
              "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
              "talk.religion.misc")  # 20newsgroups/reformat_20ng.py:9-13: a label is its index here
EWT_DOMAINS = ("answers", "email", "newsgroup", "reviews", "weblog")


def utf8_text(read: Callable[..., TextLines]) -> Callable[..., TextLines]:
    """A reader whose file turns out not to be UTF-8 text raises a user error naming the reader and the byte."""
    @functools.wraps(read)
    def checked(*args: Any, **kwargs: Any) -> TextLines:
        try:
            return read(*args, **kwargs)
        except UnicodeDecodeError as e:
            raise OEUserError(f"{read.__name__}: a file under {args[0] if args else kwargs.get('root')!r} is not UTF-8 "
                              f"text (byte {e.start}); use the dataset's original files.") from None
    return checked


def frequency_order(labels: Iterable[str]) -> list[str]:
    """Label names as torchtext's label vocabulary orders them: most frequent first, ties alphabetical."""
    counts = Counter(labels)
    return sorted(counts, key=lambda name: (-counts[name], name))


def _file(root: str | Path, relative: str, name: str, layout: str, how: str) -> Path:
    path = Path(root).expanduser() / relative
    if not path.is_file():
        raise missing_dataset(name, path, layout, how)
    return path


def _in_training_order(read: Callable[[str | Path, str], tuple[list[str], list[str]]], root: str | Path, split: str,
                       transform: Callable | None, source: str) -> TextLines:
    """``split`` of a labelled corpus (``read(root, split) -> (texts, label names)``), its classes numbered in the
    training split's frequency order, as torchtext's label Field numbers them."""
    classes = frequency_order(read(root, "train")[1])
    texts, labels = read(root, split)
    return _labelled(texts, labels, classes, transform, source)


def _labelled(texts: list[str], names: list[str], classes: Sequence[str], transform: Callable | None,
              source: str) -> TextLines:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise OEUserError(f"{source} holds labels the training split does not ({unknown[:5]}); the classifier has "
                          f"one output per training label. Check that both splits come from the same release.")
    return TextLines(texts, [index[n] for n in names], transform, source=source, classes=list(classes))


# ---- SST ------------------------------------------------------------------------------------------
SST_LAYOUT = "ROOT/sst/trees/{train,dev,test}.txt (trainDevTestTrees_PTB.zip unpacked)"
SST_HOW = "download http://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip and unzip it into ROOT/sst/"
_LEAF = re.compile(r"\(\d+ ([^()\s]+)\)")
_SST_BINARY = {"0": "negative", "1": "negative", "3": "positive", "4": "positive"}  # "2": neutral, dropped


def _sst_split(root: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Whole sentences (their tree's leaves joined by spaces) and binary labels, neutral left out
    (torchtext datasets/sst.py:33-43 with ``fine_grained=False``, ``filter_pred=label != 'neutral'``,
    train.py:57-59)."""
    texts, labels = [], []
    path = _file(root, f"sst/trees/{split}.txt", "SST", SST_LAYOUT, SST_HOW)
    for n, line in enumerate(read_lines(path), 1):
        line = line.strip()
        if not line.startswith("(") or len(line) < 3:
            raise OEUserError(f"{path}:{n} is not a PTB tree (it should start with '(label'); SST's trees files "
                              f"hold one tree per line.")
        label = _SST_BINARY.get(line[1])
        if label is not None:
            texts.append(" ".join(_LEAF.findall(line)))
            labels.append(label)
    return texts, labels


@utf8_text
def sst(root: str | Path, split: str = "train", transform: Callable | None = None) -> TextLines:
    """SST-2 as the reference: ``split`` train, dev or test; classes in training frequency order
    (positive, negative)."""
    return _in_training_order(_sst_split, root, split, transform, f"sst/{split}")


# ---- 20 Newsgroups --------------------------------------------------------------------------------
NG_LAYOUT = ("ROOT/20newsgroups/20ng-{train,test}.txt (the reference's CSV: label index, text) or "
             "ROOT/20newsgroups/20ng-{train,test}-no-short.txt (Cachopo's: newsgroup name, text)")
NG_HOW = ("download 20ng-train-no-short.txt and 20ng-test-no-short.txt from "
          "http://ana.cachopo.org/datasets-for-single-label-text-categorization into ROOT/20newsgroups/")


def _newsgroups_split(root: str | Path, split: str) -> tuple[list[str], list[str]]:
    """``(texts, label strings)``: the reference's CSV rows ``[index, text]`` (reformat_20ng.py:17-30), or
    Cachopo's lines ``name<ws>words`` converted the same way (label: the name's index, as a string)."""
    folder = Path(root).expanduser() / "20newsgroups"
    reformatted, raw = folder / f"20ng-{split}.txt", folder / f"20ng-{split}-no-short.txt"
    texts, labels = [], []
    if reformatted.is_file():
        with reformatted.open(encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if len(row) < 2:
                    continue
                if not (row[0].isdigit() and int(row[0]) < len(NEWSGROUPS)):
                    raise OEUserError(f"{reformatted}:{n} has the label {row[0][:20]!r}; the reference's CSV holds "
                                      f"'<index 0-19>,<text>' rows (reformat_20ng.py:17-30).")
                labels.append(row[0])
                texts.append(row[1])
        return texts, labels
    for n, line in enumerate(read_lines(_file(root, raw.relative_to(Path(root).expanduser()).as_posix(),
                                              "20 Newsgroups", NG_LAYOUT, NG_HOW)), 1):
        words = line.split()
        if words[0] not in NEWSGROUPS:
            raise OEUserError(f"{raw}:{n} starts with {words[0]!r}, not one of the 20 newsgroup names; Cachopo's "
                              f"files hold '<newsgroup><tab><text>' per line.")
        labels.append(str(NEWSGROUPS.index(words[0])))
        texts.append(" ".join(words[1:]))
    return texts, labels


@utf8_text
def newsgroups20(root: str | Path, split: str = "train", transform: Callable | None = None) -> TextLines:
    """20 Newsgroups as the reference (train.py:73-79): ``split`` train or test; classes in training frequency
    order of their label strings (a class name is its newsgroup)."""
    data = _in_training_order(_newsgroups_split, root, split, transform, f"20newsgroups/{split}")
    data.classes = [NEWSGROUPS[int(i)] for i in data.classes]
    return data


# ---- TREC -----------------------------------------------------------------------------------------
TREC_LAYOUT = "ROOT/trec/train_5500.label and ROOT/trec/TREC_10.label"
TREC_HOW = "download https://cogcomp.seas.upenn.edu/Data/QA/QC/train_5500.label and TREC_10.label into ROOT/trec/"
TREC_FILES = {"train": "train_5500.label", "test": "TREC_10.label"}


def _trec_split(root: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Questions and fine labels (``COARSE:fine``), each line read as torchtext's TREC (datasets/trec.py:33-40:
    byte 0xF0 → space, split at the first space)."""
    path = _file(root, f"trec/{TREC_FILES[split]}", "TREC", TREC_LAYOUT, TREC_HOW)
    texts, labels = [], []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            label, _, text = raw.replace(b"\xf0", b" ").decode("utf-8").partition(" ")
        except UnicodeDecodeError:
            raise OEUserError(f"{path}:{n} is not UTF-8 text; use the original TREC files.") from None
        if label:
            labels.append(label)
            texts.append(text)
    return texts, labels


@utf8_text
def trec(root: str | Path, split: str = "train", transform: Callable | None = None) -> TextLines:
    """TREC with its 50 fine labels (``fine_grained=True``, train.py:93): ``split`` train or test."""
    if split not in TREC_FILES:
        raise OEUserError(f"TREC has splits {sorted(TREC_FILES)}, not {split!r}.")
    return _in_training_order(_trec_split, root, split, transform, f"trec/{split}")


# ---- WikiText (OE) --------------------------------------------------------------------------------
WIKI_LAYOUT = ("ROOT/wikitext_reformatted/{wikitext2,wikitext103}_sentences (the reference's CSV) or "
               "ROOT/{wikitext-2,wikitext-103}/wiki.train.tokens (the raw release)")
WIKI_HOW = ("download wikitext-2-v1.zip (or wikitext-103-v1.zip) from the WikiText page "
            "(https://blog.salesforceairesearch.com/the-wikitext-long-term-dependency-language-modeling-dataset/) "
            "and unzip it into ROOT/")
_WIKI_SENTENCE_END = re.compile(r"(?<= [.!?]) (?=\S)")


def wikitext_sentences_of(lines: Iterable[str]) -> list[str]:
    """The reference's OE sentences of WikiText's ``wiki.train.tokens`` lines (wikitext_reformatted/
    reformat_wikitext.py): blank lines and ``=`` headings dropped (:13-21); sentences (here: split after a
    ``.``, ``!`` or ``?`` token, where the reference runs NLTK's Punkt) whose first character is not ``@``, a
    space or a digit (:31-32) and that have 3 to 60 space-separated words (:33-35)."""
    out = []
    for line in lines:
        if line in (" \n", " ") or line[:2] == " =" or not line.strip():
            continue
        for sentence in _WIKI_SENTENCE_END.split(line.strip()):
            if sentence[0] in "@ \n0123456789" or "\n" in sentence:
                continue
            if 3 <= len(sentence.split(" ")) <= 60:
                out.append(sentence)
    return out


@utf8_text
def wikitext_sentences(root: str | Path, version: str = "wikitext-2", transform: Callable | None = None) -> TextLines:
    """WikiText-2 (or ``wikitext-103``) sentences, the reference's OE text (train_OE.py:109-124): its
    reformatted CSV if present, else made from the raw ``wiki.train.tokens`` as its script makes it."""
    if version not in ("wikitext-2", "wikitext-103"):
        raise OEUserError(f"oe.version must be wikitext-2 or wikitext-103, got {version!r}.")
    root = Path(root).expanduser()
    reformatted = root / "wikitext_reformatted" / f"{version.replace('-', '')}_sentences"
    if reformatted.is_file():
        with reformatted.open(encoding="utf-8", newline="") as f:
            texts = [row[0] for row in csv.reader(f) if row]
        return TextLines(texts, None, transform, source=version)
    raw = next((p for p in (root / version / "wiki.train.tokens", root / version / version / "wiki.train.tokens")
                if p.is_file()), None)
    if raw is None:
        raise missing_dataset(version, root / version, WIKI_LAYOUT, WIKI_HOW)
    with raw.open(encoding="utf-8") as f:
        return TextLines(wikitext_sentences_of(f), None, transform, source=version)


# ---- OOD test sets (eval_OOD_sst.py:80-240) ----------------------------------------------------------
@utf8_text
def snli(root: str | Path, transform: Callable | None = None) -> TextLines:
    """SNLI 1.0 test hypotheses (``sentence2``), pairs without a gold label left out (eval_OOD_sst.py:101-105,
    276-277; torchtext datasets/nli.py:88)."""
    path = _file(root, "snli/snli_1.0/snli_1.0_test.jsonl", "SNLI", "ROOT/snli/snli_1.0/snli_1.0_test.jsonl",
                 "download https://nlp.stanford.edu/projects/snli/snli_1.0.zip and unzip it into ROOT/snli/")
    texts = []
    for n, line in enumerate(read_lines(path), 1):
        try:
            pair = json.loads(line)
        except json.JSONDecodeError:
            raise OEUserError(f"{path}:{n} is not a JSON object; SNLI's .jsonl files hold one pair per line.") from None
        if isinstance(pair, dict) and pair.get("gold_label") != "-" and isinstance(pair.get("sentence2"), str):
            texts.append(pair["sentence2"])
    return TextLines(texts, None, transform, source="snli")


def imdb(root: str | Path, transform: Callable | None = None) -> TextLines:
    """IMDB test reviews (``aclImdb/test/{pos,neg}/*.txt``, each file's first line, as torchtext's IMDB)."""
    folder = Path(root).expanduser() / "imdb" / "aclImdb" / "test"
    files = sorted(p for sub in ("pos", "neg") for p in (folder / sub).glob("*.txt")
                   if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
    if not files:
        raise missing_dataset("IMDB", folder, "ROOT/imdb/aclImdb/test/{pos,neg}/*.txt",
                              "download https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz and unpack "
                              "it into ROOT/imdb/")
    texts = []
    for p in files:
        with p.open(encoding="utf-8", errors="replace") as f:
            texts.append(f.readline())
    return TextLines(texts, None, transform, source="imdb")


@utf8_text
def first_column(root: str | Path, relative: str, name: str, how: str, column: int = 0,
                 transform: Callable | None = None) -> TextLines:
    """One text per CSV row, its ``column``: Multi30K's ``multi30k/train.txt`` (column 0, the reference's
    reformatted English captions, eval_OOD_sst.py:121-123) or Yelp's ``yelp_review_full_csv/test.csv`` (column
    1, the review; column 0 the stars, :232-234)."""
    path = _file(root, relative, name, f"ROOT/{relative}", how)
    with path.open(encoding="utf-8", newline="") as f:
        texts = [row[column] for row in csv.reader(f) if len(row) > column]
    return TextLines(texts, None, transform, source=name)


@utf8_text
def plain_lines(root: str | Path, relative: str, name: str, how: str,
                transform: Callable | None = None) -> TextLines:
    """One text per line: WMT16's ``wmt16/wmt16_sentences`` (the reference's concatenated newstest English,
    wmt16/concat_wmt_sentences.py). The reference reads this plain file as CSV, so 13,387 of its 22,191 lines
    end at their first comma; here each line is whole."""
    return TextLines(read_lines(_file(root, relative, name, f"ROOT/{relative}", how)), None, transform, source=name)


def multi30k_caption(line: str) -> str | None:
    """One Multi30K English caption as the reference reformats it (multi30k/reformat_multi30k.py:15-28): ``'s``,
    ``'d``, ``n't``, quotes and commas set apart, a final ``? . !`` detached, lower-cased; None for an empty line."""
    line = line.rstrip("\n")
    for piece, spaced in (("'s", " 's "), ("'d", " 'd "), (",", " ,"), ("n't", " n't "), ('"', ' " ')):
        line = spaced.join(line.split(piece))
    if not line:
        return None
    if line[-1] in "?.!":
        line = line[:-1] + " " + line[-1]
    return line.lower()


MULTI30K_HOW = ("download the Multi30K English training captions (train.en, https://github.com/multi30k/dataset) into "
                "ROOT/multi30k/")


@utf8_text
def multi30k(root: str | Path, transform: Callable | None = None) -> TextLines:
    """Multi30K's English training captions: the reference's reformatted CSV ``multi30k/train.txt`` (column 0,
    eval_OOD_sst.py:121-123), else the public ``multi30k/train.en`` reformatted as its script does."""
    folder = Path(root).expanduser() / "multi30k"
    if (folder / "train.txt").is_file():
        return first_column(root, "multi30k/train.txt", "multi30k", MULTI30K_HOW, 0, transform)
    path = _file(root, "multi30k/train.en", "Multi30K", "ROOT/multi30k/train.txt or ROOT/multi30k/train.en",
                 MULTI30K_HOW)
    with path.open(encoding="utf-8") as f:
        texts = [c for c in (multi30k_caption(line) for line in f) if c is not None]
    return TextLines(texts, None, transform, source="multi30k")


WMT16_HOW = ("unpack the GNMT wmt16_en_de data (its newstest/newsdev *.tok.en files) into ROOT/wmt16/wmt16_en_de/, "
             "or place the reference's wmt16_sentences in ROOT/wmt16/")


@utf8_text
def wmt16(root: str | Path, transform: Callable | None = None) -> TextLines:
    """WMT16's English news test sentences: the reference's ``wmt16/wmt16_sentences``, else every ``*.tok.en`` file
    of ``wmt16/wmt16_en_de/`` (sorted by name; the reference takes os.listdir's order), lower-cased and
    concatenated as wmt16/concat_wmt_sentences.py:7-19 does. Each line is one text: the reference read this plain
    file as CSV (eval_OOD_sst.py:134-136), so 13,387 of its 22,191 lines ended at their first comma."""
    folder = Path(root).expanduser() / "wmt16"
    if (folder / "wmt16_sentences").is_file():
        return plain_lines(root, "wmt16/wmt16_sentences", "wmt16", WMT16_HOW, transform)
    files = sorted(p for p in (folder / "wmt16_en_de").glob("*.tok.en") if p.is_file() and not p.is_symlink()) \
        if (folder / "wmt16_en_de").is_dir() else []
    if not files:
        raise missing_dataset("WMT16", folder, "ROOT/wmt16/wmt16_sentences or ROOT/wmt16/wmt16_en_de/*.tok.en",
                              WMT16_HOW)
    return TextLines([line.lower() for p in files for line in read_lines(p)], None, transform, source="wmt16")


@utf8_text
def ewt(root: str | Path, domain: str, transform: Callable | None = None) -> TextLines:
    """An English Web Treebank (LDC2012T13) domain's dev sentences: its CoNLL file, one token per line (the word
    form in column 1), sentences apart by blank lines (eval_OOD_sst.py:148-220, SequenceTaggingDataset)."""
    if domain not in EWT_DOMAINS:
        raise OEUserError(f"The English Web Treebank has domains {list(EWT_DOMAINS)}, not {domain!r}.")
    relative = f"eng_web_tbk/{domain}/conll/{domain}_penntrees.dev.conll"
    path = _file(root, relative, f"EWT {domain}", f"ROOT/{relative}",
                 "the English Web Treebank is licensed by the LDC (LDC2012T13): place its data under ROOT/eng_web_tbk/")
    texts, words = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            columns = line.rstrip("\n").split("\t")
            if not line.strip():
                if words:
                    texts.append(" ".join(words))
                words = []
            elif len(columns) > 1:
                words.append(columns[1])
    if words:
        texts.append(" ".join(words))
    return TextLines(texts, None, transform, source=f"ewt_{domain}")
