"""The text family at deployment: a checkpoint's stored tokenisation and vocabulary (checked plain values), the
texts a user hands over (lines of ``.txt`` files, folders of them), and the export sidecar's description."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from oe_lightning.data.text.vocabulary import (
    PAD_INDEX,
    UNK_INDEX,
    WORDS_PATTERN,
    Encode,
    TextRules,
    Vocabulary,
    pad_sequences,
)
from oe_lightning.errors import OEUserError

log = logging.getLogger("oe_lightning")

TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class TextPreprocessing:
    """How a text becomes the model's input: the ID tokenisation rules (the ones the classifier was trained on and
    its threshold chosen with; a deployed input is read as ID text), the vocabulary, ``<pad>`` before or after the
    text, and (recorded, for oe-eval's check) whether OE and OOD text was lower-cased."""

    rules: TextRules
    vocabulary: Vocabulary
    pad_first: bool = True
    outlier_lower: bool = True
    family = "text"

    @classmethod
    def from_dict(cls, values: Any) -> TextPreprocessing:
        """Checked plain values (a checkpoint's, an export sidecar's): a known tokenizer, booleans, a length, and
        a vocabulary of distinct strings starting with ``<unk>``, ``<pad>``."""
        if not isinstance(values, dict):
            raise OEUserError(f"The stored text preprocessing {values!r} is not a mapping.")
        length = values.get("fix_length")
        bad = TextRules.problems(values.get("tokenizer"), values.get("lower"), length)
        for key in ("pad_first", "outlier_lower"):
            if not isinstance(values.get(key, True), bool):
                bad.append(f"{key}={values.get(key)!r} must be true or false")
        vocabulary = None
        try:
            vocabulary = Vocabulary.stored(values.get("vocabulary"))
        except OEUserError as err:
            bad.append(f"vocabulary: {err}")
        if bad or vocabulary is None:
            raise OEUserError(f"The stored text preprocessing is not valid: {'; '.join(bad)}.")
        return cls(TextRules(values["tokenizer"], values["lower"], length), vocabulary, values["pad_first"],
                   values.get("outlier_lower", True))

    def to_dict(self) -> dict[str, Any]:
        """The plain values checkpoints and export sidecars store."""
        return {"family": self.family, **self.rules.to_dict(), "pad_first": self.pad_first,
                "outlier_lower": self.outlier_lower, "vocabulary": list(self.vocabulary.itos)}

    def sequences(self, texts: Sequence[str]) -> list[Tensor]:
        """Each text's token indices (cut to ``fix_length``), unpadded."""
        encode = Encode(self.rules, self.vocabulary)
        return [encode(text) for text in texts]

    def pad(self, sequences: Sequence[Tensor]) -> Tensor:
        """``(len(sequences), length)`` token indices, padded as in training."""
        return pad_sequences(sequences, self.rules.fix_length, self.pad_first)

    def steps(self) -> list[str]:
        """The sidecar's description, enough to feed the exported model without oe_lightning."""
        split = ("split on whitespace (Python's str.split())" if self.rules.tokenizer == "split" else
                 f"tokens = re.findall(r\"{WORDS_PATTERN}\", text): words (with apostrophes) and each punctuation "
                 f"mark apart")
        return [f"remove the trailing newline; {split}", "lower-case every token" if self.rules.lower else
                "keep the case", *([f"keep the first {self.rules.fix_length} tokens"] if self.rules.fix_length else []),
                f"index = position of the token in 'vocabulary'; a token not in it is {UNK_INDEX} (<unk>)",
                f"pad with {PAD_INDEX} (<pad>) {'before' if self.pad_first else 'after'} each text to "
                + (f"{self.rules.fix_length} tokens" if self.rules.fix_length else
                   "the batch's longest (at least 1); padding changes a recurrent model's state, so batch texts "
                   "of one length together (as oe-predict does) for scores that do not depend on the batch"),
                "int64 [batch, length]"]


def text_inputs(inputs: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """``(name, text)`` for every non-empty line of the given ``.txt`` files and of the ``.txt`` files under the
    given folders (recursively, sorted; regular files only), named ``file:line``. A path that does not exist, or
    inputs without any line, are refused before the model runs; a file that is not UTF-8 text is one row
    ``(file, None)``, reported, and the others are still read."""
    from oe_lightning.data.files import list_files, regular_file, warn_skipped
    from oe_lightning.data.text.lines import numbered_lines

    inputs = list(inputs)
    files: list[Path] = []
    missing = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            listing = list_files(path, lambda name: name.lower().endswith(TEXT_SUFFIXES), hidden=False)
            warn_skipped([listing], f"input {path}")
            files += sorted(listing.files)
        elif regular_file(path):
            files.append(path)
        else:
            missing.append(str(item))
    if missing:
        raise OEUserError(f"input names {len(missing)} path(s) that are not regular files: {', '.join(missing[:5])}. "
                          f"Pass text files (one text per line) or folders of .txt files.")
    rows: list[tuple[str, str | None]] = []
    for path in files:
        try:
            rows += [(f"{path}:{n}", line) for n, line in numbered_lines(path)]
        except OEUserError as err:  # reported in its row, the other files still predicted
            rows.append((str(path), None))
            log.warning("%s", err)
    if not rows:
        raise OEUserError(f"input {', '.join(str(i) for i in inputs)} holds no text (looked for non-empty lines in "
                          f"{', '.join(TEXT_SUFFIXES)} files, in sub-folders too).")
    return rows
