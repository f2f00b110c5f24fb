"""The text data family: what the DataModule asks of it, so that the module, evaluation, detectors, metrics,
tables, sweeps, resume and DDP see ``(batch, length)`` index tensors and never text.

- :meth:`TextFamily.fit` builds the vocabulary from the ID training texts (the held-out validation part
  left out); every set is then read into it: ID text under ``rules``, OE and OOD text under
  ``outlier_rules`` (the reference reads them through Fields of their own: lower-cased, never cut to a fixed
  length, hendrycks/outlier-exposure NLP_classification/train_OE.py:109, eval_OOD_sst.py:81).
- :meth:`TextFamily.collate` pads a loader's sequences (``<pad>`` = 1, before the text by default).
- :meth:`TextFamily.join` pads a training step's ID and OE batches to one length and concatenates them, for a
  module that runs one forward over both (``module.joint_forward``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from oe_lightning.data.text.vocabulary import PAD_INDEX, Encode, TextRules, Vocabulary, pad_sequences
from oe_lightning.errors import OEUserError


class TextFamily:
    """Tokenisation, vocabulary and padding of one text run.

    Args:
        tokenizer: ``split`` (whitespace, torchtext's Field) or ``words`` (words and punctuation apart).
        lower: lower-case ID tokens (SST: false, train.py:53; 20NG and TREC: true, train.py:70, 89).
        fix_length: cut and pad every ID text to this many tokens (20NG: 100, train.py:70); None: the batch's
            longest.
        outlier_lower: lower-case OE and OOD tokens (true in the reference for every set).
        pad_first: ``<pad>`` before the text (the reference's ``Field(pad_first=True)``), else after it.
        max_vocab: words kept (most frequent first; ``<unk>`` and ``<pad>`` on top; reference 10,000,
            train.py:62), None: all.
        min_freq: a word seen fewer times in the ID training text maps to ``<unk>``.
    """

    name = "text"

    def __init__(self, tokenizer: str = "split", lower: bool = False, fix_length: int | None = None,
                 outlier_lower: bool = True, pad_first: bool = True, max_vocab: int | None = 10_000,
                 min_freq: int = 1):
        self.rules = TextRules(tokenizer, bool(lower), fix_length)
        self.outlier_rules = TextRules(tokenizer, bool(outlier_lower), None)
        self.pad_first = bool(pad_first)
        if max_vocab is not None and not (isinstance(max_vocab, int) and max_vocab >= 1):
            raise OEUserError(f"data.family.max_vocab must be null or an integer >= 1 (words kept), got {max_vocab!r}.")
        if not (isinstance(min_freq, int) and min_freq >= 1):
            raise OEUserError(f"data.family.min_freq must be an integer >= 1, got {min_freq!r}.")
        self.max_vocab, self.min_freq = max_vocab, min_freq
        self.vocabulary: Vocabulary | None = None  # built by fit, or a checkpoint's (use_stored)

    @property
    def fitted(self) -> bool:
        return self.vocabulary is not None

    def fit(self, texts: Any, indices: Sequence[int] | None = None) -> None:
        """Build the vocabulary under the ID rules from the ID training texts: a dataset read without a transform
        (at ``indices``: the training part) or a list of strings."""
        texts = texts_of(texts, range(len(texts)) if indices is None else indices)
        self.vocabulary = Vocabulary.build((self.rules.tokens(t) for t in texts), self.max_vocab, self.min_freq)

    def use_stored(self, stored: Any) -> None:
        """Read with a checkpoint's vocabulary (oe-eval: the one the model was trained on), after checking that
        this data tokenises as that checkpoint did."""
        from oe_lightning.data.text.deploy import TextPreprocessing

        saved = TextPreprocessing.from_dict(stored)
        mine = self._preprocessing(saved.vocabulary).to_dict()
        differ = [f"{k}: checkpoint {v!r}, data {mine[k]!r}" for k, v in saved.to_dict().items()
                  if k != "vocabulary" and v != mine[k]]
        if differ:
            raise OEUserError(f"The checkpoint's text was tokenised otherwise than data.family says "
                              f"({'; '.join(differ)}); evaluate it with the data config it was trained with.")
        self.vocabulary = saved.vocabulary

    def check_fits(self, model: Any) -> None:
        """Refuse, before a step, a vocabulary with more tokens than the model's first embedding has rows."""
        embedding = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        if self.vocabulary is not None and embedding is not None and len(self.vocabulary) > embedding.num_embeddings:
            raise OEUserError(f"The vocabulary has {len(self.vocabulary)} tokens but the model embeds "
                              f"{embedding.num_embeddings}; set model.vocab_size to at least {len(self.vocabulary)} "
                              f"(or data.family.max_vocab to at most {embedding.num_embeddings - 2}).")

    def encoder(self, role: str) -> Encode:
        """The transform of ``role``'s sets (``in`` or ``outlier``): a text → its token indices."""
        if self.vocabulary is None:
            raise RuntimeError("TextFamily.fit must run before its encoders are used")
        return Encode(self.rules if role == "in" else self.outlier_rules, self.vocabulary)

    def collate(self, role: str) -> Callable[[list[Any]], Any]:
        """The collate function of ``role``'s loaders: ``[indices, labels, ...]`` for labelled items, the
        indices alone otherwise."""
        length = self.rules.fix_length if role == "in" else None
        return functools.partial(collate_text, length=length, pad_first=self.pad_first)

    def join(self, x_in: Tensor, x_oe: Tensor) -> Tensor:
        """ID and OE indices in one batch, both padded to the longer length (for one forward over both)."""
        width = max(x_in.shape[1], x_oe.shape[1])
        return torch.cat([widen(x_in, width, self.pad_first), widen(x_oe, width, self.pad_first)])

    def folder(self, name: str, path: str) -> Any:
        """An OOD set given as a path: the lines of a ``.txt`` file, or of a folder's ``.txt`` files."""
        import os

        from oe_lightning.data.text.lines import text_file, text_folder

        read = text_folder if os.path.isdir(os.path.expanduser(path)) else text_file
        return functools.partial(read, path, name=name)

    def gallery(self, name: str, dataset: Any, scores: Tensor, threshold: float | None, folder: Any) -> Any:
        """``gallery_<name>.md``: a table of the set's most and least OOD-looking texts with their scores."""
        from oe_lightning import plots

        path = folder / f"gallery_{plots.safe_name(name)}.md"
        return plots.text_gallery(name, dataset.texts, scores, threshold, path)

    def _preprocessing(self, vocabulary: Vocabulary) -> Any:
        from oe_lightning.data.text.deploy import TextPreprocessing

        return TextPreprocessing(self.rules, vocabulary, self.pad_first, self.outlier_rules.lower)

    def to_dict(self) -> dict[str, Any] | None:
        """Plain values for checkpoints and export sidecars (:class:`~oe_lightning.data.text.deploy.
        TextPreprocessing`): the rules and the vocabulary; None before :meth:`fit`."""
        return self._preprocessing(self.vocabulary).to_dict() if self.vocabulary is not None else None


def collate_text(items: list[Any], length: int | None, pad_first: bool) -> Any:
    """Padded ``(batch, length)`` indices, with the other item fields collated as usual."""
    if items and isinstance(items[0], tuple | list):
        rest = default_collate([tuple(item[1:]) for item in items])
        return [pad_sequences([item[0] for item in items], length, pad_first), *rest]
    return pad_sequences(items, length, pad_first)


def widen(x: Tensor, width: int, pad_first: bool = True) -> Tensor:
    """``x`` (batch, length) padded with ``<pad>`` to ``width`` columns, before or after the text."""
    if x.shape[1] >= width:
        return x
    pad = x.new_full((x.shape[0], width - x.shape[1]), PAD_INDEX)
    return torch.cat([pad, x] if pad_first else [x, pad], dim=1)


def texts_of(dataset: Dataset, indices: Sequence[int]) -> list[str]:
    """The raw texts of ``dataset`` (read without a transform) at ``indices``."""
    texts = getattr(dataset, "texts", None)
    if texts is not None:
        return [texts[i] for i in indices]
    items = [dataset[i] for i in indices]
    return [item[0] if isinstance(item, tuple | list) else item for item in items]
