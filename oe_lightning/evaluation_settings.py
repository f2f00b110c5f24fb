"""How OOD detection is measured: one validated settings object for every reader.

The ``evaluation`` config group (``conf/evaluation/``) becomes an :class:`EvaluationSettings`
once; oe-train's validation metric, the test evaluation, ``oe-table --rescore`` and the metric
functions all check values with the same :data:`SETTING_RULES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from oe_lightning.checks import Check, boolean, choice, integer, number
from oe_lightning.errors import OEUserError

FPR_RULES = ("first", "nearest")
POSITIVES = ("out", "in")
PROTOCOLS = ("full", "paper", "paper_text")  # paper_text: the subset size of the reference's text evaluation

# setting -> (check, what it must be, how to fix it)
SETTING_RULES: dict[str, tuple[Check, str, str]] = {
    "recall": (number(0, 1, low_open=True), "a TPR in (0, 1]", "the paper reads the FPR at 0.95"),
    "fpr_rule": (choice(*FPR_RULES), "first (OpenOOD, pytorch-ood) or nearest (the paper's code)",
                 "nearest is the paper's rule"),
    "positive": (choice(*POSITIVES), "out (OOD positive, the OE paper) or in (ID positive, the energy paper)",
                 "out is the OE paper's"),
    "protocol": (choice(*PROTOCOLS), "full (every OOD sample once), paper (num_to_avg subsets of "
                 "len(ID test) // 5, the image experiments) or paper_text (the same in whole batches of 64, the text "
                 "experiments)", "paper averages subsets as the paper"),
    "num_to_avg": (integer(1), "an integer >= 1", "the paper averages 10"),
    "keep_id": (number(0, 1, low_open=True), "a share in (0, 1]",
                "the deployed threshold keeps this share of ID validation images, e.g. 0.95"),
    "plots": (boolean, "true or false", "false skips RUN_DIR/plots/"),
}


def setting_problems(values: Mapping[str, Any], prefix: str = "evaluation.") -> list[str]:
    """One ``key=value must be ...; fix`` line per bad value among ``values`` (unknown keys: ignored)."""
    return [f"{prefix}{key}={values[key]!r} must be {what}; {fix}"
            for key, (check, what, fix) in SETTING_RULES.items() if key in values and not check(values[key])]


def check_settings(prefix: str = "", **values: Any) -> None:
    """Raise one :class:`OEUserError` naming every bad value (an ``OEUserError`` is a ``ValueError``)."""
    found = setting_problems(values, prefix)
    if found:
        raise OEUserError("Bad evaluation settings: " + "; ".join(found) + ".")


@dataclass(frozen=True)
class EvaluationSettings:
    """The FPR@TPR operating point and rule, the positive class, the protocol and the deployed
    threshold's ID share; checked when made (see :data:`SETTING_RULES`).

    ``recall``/``fpr_rule``: the FPR is read where the TPR reaches ``recall``, at the first threshold
    (``first``) or the one nearest to it (``nearest``, the paper's code). ``positive``: the FPR's positive
    class. ``protocol``: ``full`` scores every OOD sample once; ``paper`` averages ``num_to_avg`` subsets.
    ``keep_id``: the share of ID validation samples the deployed threshold keeps. ``plots``: draw
    RUN_DIR/plots/.
    """

    recall: float = 0.95
    fpr_rule: str = "first"
    positive: str = "out"
    protocol: str = "full"
    num_to_avg: int = 10
    keep_id: float = 0.95
    plots: bool = True

    def __post_init__(self) -> None:
        check_settings("evaluation.", **asdict(self))

    @classmethod
    def of(cls, value: EvaluationSettings | Mapping[str, Any] | None) -> EvaluationSettings:
        """``value`` itself, the settings of a mapping (the ``evaluation`` config node; unknown keys
        ignored, missing ones default), or the defaults for ``None``."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(value).items() if k in names})

    @property
    def fpr_name(self) -> str:
        """The FPR's metric name: ``fpr95`` at recall 0.95, ``fpr90`` at 0.9."""
        return f"fpr{round(self.recall * 100)}"
