"""Tokenisation rules and the vocabulary of a text data family, written as torchtext's legacy ``Field``
and ``Vocab`` did (the reference's NLP code, hendrycks/outlier-exposure NLP_classification/, uses them;
torchtext removed them in 0.12).

- Tokens: ``str.split`` on the line without its trailing newline (legacy ``Field``'s default tokenizer),
  each token lower-cased when ``lower`` (``Field(lower=True)`` lower-cases tokens, not the line).
- Vocabulary: ``<unk>`` = 0, ``<pad>`` = 1, then the ``max_size`` most frequent tokens of the ID training
  text, ties in alphabetical order (``Vocab.__init__``: sorted by token, then stably by count, descending);
  a token seen fewer than ``min_freq`` times is left out. Any other token maps to ``<unk>``.
- Padding: ``<pad>`` before the text (``pad_first``, as every text Field of the reference) or after it, to the
  batch's longest sequence or to ``fix_length``; a longer text keeps its first ``fix_length`` tokens
  (legacy ``Field.pad``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from oe_lightning.errors import OEUserError

UNK, PAD = "<unk>", "<pad>"
UNK_INDEX, PAD_INDEX = 0, 1
SPECIALS = (UNK, PAD)
MAX_VOCABULARY = 10_000_000  # tokens; a checkpoint's stored vocabulary meets the same bound
MAX_FIX_LENGTH = 65_536  # tokens per text; far above any corpus here (20 Newsgroups: 100), bounds a stored value

WORDS_PATTERN = r"[\w']+|[^\w\s]"
_WORDS = re.compile(WORDS_PATTERN)

# the tokenizers a config or a checkpoint may name (a closed list: a stored name never chooses code)
TOKENIZERS = {
    "split": str.split,  # torchtext legacy Field's default; the reference's data is already tokenised
    "words": _WORDS.findall,  # raw text: words (with apostrophes) and each punctuation mark apart
}


@dataclass(frozen=True)
class TextRules:
    """How a line of text becomes tokens: ``tokenizer`` (a name in :data:`TOKENIZERS`), ``lower`` (lower-case
    each token) and ``fix_length`` (pad or cut every sequence to this many tokens; None: pad to the batch's
    longest)."""

    tokenizer: str = "split"
    lower: bool = False
    fix_length: int | None = None

    def __post_init__(self) -> None:
        bad = self.problems(self.tokenizer, self.lower, self.fix_length)
        if bad:
            raise OEUserError(f"The text rules are not valid: {'; '.join(bad)}.")

    @staticmethod
    def problems(tokenizer: Any, lower: Any, fix_length: Any) -> list[str]:
        """What is wrong with these values (a config's or a checkpoint's), one line each."""
        bad = []
        if not (isinstance(tokenizer, str) and tokenizer in TOKENIZERS):
            bad.append(f"tokenizer={tokenizer!r} must be one of {sorted(TOKENIZERS)} (split: on whitespace, as "
                       f"torchtext's Field; words: words and punctuation apart, for raw text)")
        if not isinstance(lower, bool):
            bad.append(f"lower={lower!r} must be true or false")
        if fix_length is not None and not (isinstance(fix_length, int) and not isinstance(fix_length, bool)
                                           and 1 <= fix_length <= MAX_FIX_LENGTH):
            bad.append(f"fix_length={fix_length!r} must be null or an integer in [1, {MAX_FIX_LENGTH}] (tokens per "
                       f"text; the reference's 20 Newsgroups uses 100)")
        return bad

    def tokens(self, text: str) -> list[str]:
        """The tokens of one text (legacy ``Field.preprocess``: tokenise the line without its newline, then
        lower-case each token)."""
        tokens = TOKENIZERS[self.tokenizer](text.rstrip("\n"))
        return [t.lower() for t in tokens] if self.lower else tokens

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "lower": self.lower, "fix_length": self.fix_length}


class Vocabulary:
    """Tokens to indices: ``<unk>`` 0, ``<pad>`` 1, then the words (see the module docstring)."""

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if itos[:2] != list(SPECIALS) or len(set(itos)) != len(itos) or len(itos) > MAX_VOCABULARY:
            raise OEUserError(f"A vocabulary must start with {list(SPECIALS)}, hold each token once and at most "
                              f"{MAX_VOCABULARY} tokens; this one starts {itos[:3]} and has {len(itos)} tokens.")
        self.itos = itos
        self.stoi = {s: i for i, s in enumerate(itos)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int | None = None,
              min_freq: int = 1) -> Vocabulary:
        """The vocabulary of ``token_lists``: at most ``max_size`` words (specials not counted), each seen at
        least ``min_freq`` times, most frequent first, ties alphabetical (legacy ``Vocab``)."""
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        for special in SPECIALS:
            counter.pop(special, None)
        ranked = sorted(counter.items(), key=lambda kv: kv[0])
        ranked.sort(key=lambda kv: kv[1], reverse=True)
        words = [w for w, n in ranked if n >= max(min_freq, 1)]
        return cls([*SPECIALS, *(words if max_size is None else words[:max_size])])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> Tensor:
        """Token indices (``<unk>`` for a token outside the vocabulary), as a 1-D ``int64`` tensor."""
        stoi = self.stoi
        return torch.tensor([stoi.get(t, UNK_INDEX) for t in tokens], dtype=torch.long)

    @classmethod
    def stored(cls, itos: Any) -> Vocabulary:
        """A stored vocabulary, checked: a list of distinct strings starting with the specials."""
        if not isinstance(itos, list) or not all(isinstance(s, str) for s in itos):
            raise OEUserError("The stored vocabulary is not a list of strings; the checkpoint or sidecar is damaged "
                              "or not from oe-lightning.")
        return cls(itos)


class Encode:
    """The text transform: a line → its token indices under ``rules`` and ``vocabulary`` (cut to
    ``rules.fix_length``)."""

    def __init__(self, rules: TextRules, vocabulary: Vocabulary):
        self.rules, self.vocabulary = rules, vocabulary

    def __call__(self, text: str) -> Tensor:
        tokens = self.rules.tokens(text)
        if self.rules.fix_length is not None:
            tokens = tokens[:self.rules.fix_length]
        return self.vocabulary.encode(tokens)


def pad_sequences(sequences: Sequence[Tensor], length: int | None = None, pad_first: bool = True,
                  pad_index: int = PAD_INDEX) -> Tensor:
    """``(batch, length)`` indices, ``<pad>`` before each sequence (``pad_first``) or after it; ``length`` None:
    the longest sequence's (at least 1, so an empty text is one ``<pad>``); longer ones keep their first tokens."""
    longest = max((len(s) for s in sequences), default=0)
    width = max(longest if length is None else length, 1)
    out = torch.full((len(sequences), width), pad_index, dtype=torch.long)
    for row, seq in zip(out, sequences, strict=True):
        n = min(len(seq), width)
        if pad_first:
            row[width - n:] = seq[:n]
        else:
            row[:n] = seq[:n]
    return out
