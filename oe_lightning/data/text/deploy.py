"""The text family at deployment: a checkpoint's stored tokenisation and vocabulary (checked plain values), the
texts a user hands over (lines of ``.txt`` files, folders of them), and the export sidecar's description."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from oe_lightning.data.text.vocabulary import PAD_INDEX, TOKENIZERS, UNK_INDEX, TextRules, Vocabulary, pad_sequences
from oe_lightning.errors import OEUserError

TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class TextPreprocessing:
    """How a text becomes the model's input: the ID tokenisation rules (the ones the classifier was trained on),
    the vocabulary, ``<pad>`` before or after the text."""

    rules: TextRules
    vocabulary: Vocabulary
    pad_first: bool = True
    family = "text"

    @classmethod
    def from_dict(cls, values: Any) -> TextPreprocessing:
        """Checked plain values (a checkpoint's, an export sidecar's): a known tokenizer, booleans, a length, and
        a vocabulary of distinct strings starting with ``<unk>``, ``<pad>``."""
        if not isinstance(values, dict):
            raise OEUserError(f"The stored text preprocessing {values!r} is not a mapping.")
        bad = []
        if values.get("tokenizer") not in TOKENIZERS:
            bad.append(f"tokenizer={values.get('tokenizer')!r} (one of {sorted(TOKENIZERS)})")
        for key in ("lower", "pad_first"):
            if not isinstance(values.get(key), bool):
                bad.append(f"{key}={values.get(key)!r} (true or false)")
        length = values.get("fix_length")
        if length is not None and not (isinstance(length, int) and not isinstance(length, bool) and length >= 1):
            bad.append(f"fix_length={length!r} (null or an integer >= 1)")
        vocabulary = None
        try:
            vocabulary = Vocabulary.from_dict({"itos": values.get("vocabulary")})
        except OEUserError as err:
            bad.append(f"vocabulary: {err}")
        if bad or vocabulary is None:
            raise OEUserError(f"The stored text preprocessing is not valid: {'; '.join(bad)}.")
        return cls(TextRules(values["tokenizer"], values["lower"], length), vocabulary, values["pad_first"])

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **self.rules.to_dict(), "pad_first": self.pad_first,
                "vocabulary": list(self.vocabulary.itos)}

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``(len(texts), length)`` token indices, padded as in training."""
        sequences = []
        for text in texts:
            tokens = self.rules.tokens(text)
            if self.rules.fix_length is not None:
                tokens = tokens[:self.rules.fix_length]
            sequences.append(self.vocabulary.encode(tokens))
        return pad_sequences(sequences, self.rules.fix_length, self.pad_first)

    def steps(self) -> list[str]:
        """The sidecar's description, enough to feed the exported model without oe_lightning."""
        split = ("split on whitespace (Python's str.split())" if self.rules.tokenizer == "split" else
                 "tokens = re.findall(r\"[\\w']+|[^\\w\\s]\", text): words (with apostrophes) and each punctuation "
                 "mark apart")
        return [f"remove the trailing newline; {split}", "lower-case every token" if self.rules.lower else
                "keep the case", *([f"keep the first {self.rules.fix_length} tokens"] if self.rules.fix_length else []),
                f"index = position of the token in 'vocabulary'; a token not in it is {UNK_INDEX} (<unk>)",
                f"pad with {PAD_INDEX} (<pad>) {'before' if self.pad_first else 'after'} each text to "
                + (f"{self.rules.fix_length} tokens" if self.rules.fix_length else "the batch's longest (at least 1)"),
                "int64 [batch, length]"]


def text_inputs(inputs: Iterable[str | Path]) -> list[tuple[str, str]]:
    """``(name, text)`` for every non-empty line of the given ``.txt`` files and of the ``.txt`` files under the
    given folders (recursively, sorted; regular files only), named ``file:line``. A path that does not exist, or
    inputs without any line, are refused before the model runs."""
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
    rows = [(f"{path}:{n}", line) for path in files for n, line in numbered_lines(path)]
    if not rows:
        raise OEUserError(f"input {', '.join(str(i) for i in inputs)} holds no text (looked for non-empty lines in "
                          f"{', '.join(TEXT_SUFFIXES)} files, in sub-folders too).")
    return rows
