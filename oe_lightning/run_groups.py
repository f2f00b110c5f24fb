"""Runs into experiments: every complete ``results.json`` under a folder, grouped so that runs differing
only in seed are one :class:`Group` (mean ± sample std over seeds), each labelled by the keys that set it
apart from its peers. λ = 0 runs are their dataset's baseline."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oe_lightning.baseline import is_baseline
from oe_lightning.results import RESULTS_FILE, group_identity, identity_hash, read_complete, upgraded_identity

METRICS = ("fpr95", "auroc", "aupr_out")  # with the FPR at the runs' recall: metrics_of(groups)


LABELS = {"fpr95": "FPR95 ↓", "auroc": "AUROC ↑", "aupr_out": "AUPR ↑"}


def label(metric: str) -> str:
    """A metric's column name: ``FPR90 ↓`` for ``fpr90``, ``AUROC ↑``, ..."""
    if metric in LABELS:
        return LABELS[metric]
    return f"FPR{metric[3:]} ↓" if metric.startswith("fpr") else metric


def fpr_names(groups: Iterable[Group]) -> list[str]:
    """The FPR metrics the runs hold (``fpr95``; ``fpr90`` for runs read at 90% recall, as the paper's text
    experiments), highest recall first; ``["fpr95"]`` when there are none."""
    names = {k for g in groups for r in g.runs for k in (r.get("mean") or {})
             if k.startswith("fpr") and not k.endswith("_std")}
    return sorted(names, reverse=True) or ["fpr95"]


def metrics_of(groups: Iterable[Group]) -> tuple[str, ...]:
    """The metrics tables show for ``groups``: their FPRs, AUROC and AUPR."""
    return (*fpr_names(groups), "auroc", "aupr_out")


PAPER_LOSS = "UniformCrossEntropy"


IGNORED_KEYS = ("seed", "pretrained")


MAX_LABEL_KEYS = 4  # differing config keys named in a group's label


@dataclass
class Group:
    """Runs that differ only in seed."""

    config: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    distinguish: tuple[str, ...] = ()  # config keys shown in the label (they vary between groups)
    identity: dict[str, Any] | None = None  # the group's resolved config (results.group_identity)
    key: str = ""  # what its runs share: their results' group_id, or (older results) their key config

    @property
    def group_id(self) -> str:
        """A short id of the group, the same for every re-run of its experiment."""
        return self.key if len(self.key) <= 16 and self.key.isalnum() else \
            hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def data(self) -> str:
        """The dataset's name."""
        return str(self.config.get("data"))

    @property
    def lambda_oe(self) -> float:
        """λ, 0 for a baseline."""
        return float(self.config.get("lambda_oe") or 0.0)

    @property
    def method(self) -> str:
        """``baseline``, ``oe_tune`` (fine-tuned from a checkpoint) or ``oe_scratch``."""
        if is_baseline(self.lambda_oe):
            return "baseline"
        return "oe_tune" if self.config.get("tuned") else "oe_scratch"

    @property
    def label(self) -> str:
        """The method, λ and how it was trained, then the keys that set the group apart."""
        if self.method == "baseline":
            text = "baseline"
        else:
            how = "tune" if self.method == "oe_tune" else "scratch"
            mining = f" + {self.config['mining']}" if self.config.get("mining") else ""
            text = f"{self.config.get('loss')}{mining} λ={self.lambda_oe:g} ({how})"
        source = self.identity if self.identity is not None else self.config
        extra = [f"{k}={_short(source.get(k))}" for k in self.distinguish[:MAX_LABEL_KEYS]]
        if len(self.distinguish) > MAX_LABEL_KEYS:
            extra.append(f"+{len(self.distinguish) - MAX_LABEL_KEYS} more keys")
        return text + (f" [{', '.join(extra)}]" if extra else "")

    @property
    def seeds(self) -> list[Any]:
        """The seeds of the group's runs, in order."""
        return [r["config"].get("seed") for r in self.runs]

    def ood_sets(self) -> list[str]:
        """Every OOD set of the group's runs, in first-seen order."""
        names: list[str] = []
        for run in self.runs:
            names += [n for n in run["ood"] if n not in names]
        return names

    def ood_groups(self) -> list[str]:
        """Every group of OOD sets (OpenOOD's near, far) of the group's runs, in first-seen order."""
        return list(dict.fromkeys(g for r in self.runs for g in (r.get("ood_groups") or {})))

    def stat(self, ood_set: str | None, metric: str, ood_group: str | None = None) -> tuple[float, float] | None:
        """Mean and sample std (0 for one seed) over seeds, in %; ``ood_set=None``: the mean row, or with
        ``ood_group`` the mean over that group's sets."""
        def means(r: dict[str, Any]) -> dict[str, float]:
            if ood_group is not None:
                return (r.get("groups") or {}).get(ood_group, {})
            return r["mean"] if ood_set is None else r["ood"].get(ood_set, {})

        values = [100 * means(r).get(metric, math.nan) for r in self.runs]
        return _mean_std([v for v in values if not math.isnan(v)])

    def id_accuracy(self) -> tuple[float, float]:
        """ID test accuracy in %, mean and sample std over seeds."""
        return _mean_std([100 * r["id_accuracy"] for r in self.runs])


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample std (0 for a single value) over seeds; None without values."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _short(value: Any) -> str:
    """``oe_lightning.models.SmallCNN`` -> ``SmallCNN``; other values as they are."""
    text = str(value)
    return text.rsplit(".", 1)[-1] if "." in text and not text.replace(".", "").isdigit() else text


def collect_runs(root: str | Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """Complete ``results.json`` files under ``root`` (any depth) and the incomplete ones' paths."""
    from oe_lightning.data.files import list_files, warn_skipped

    complete, incomplete = [], []
    listing = list_files(root, lambda p: Path(p).name == RESULTS_FILE)  # regular files: a FIFO would hang
    warn_skipped([listing], f"runs under {root}")
    for path in sorted(listing.files):
        results = read_complete(path)
        if results is None:
            incomplete.append(path)
        else:
            complete.append({**results, "_dir": str(path.parent)})
    return complete, incomplete


def group_key(config: dict[str, Any]) -> dict[str, Any]:
    """The key config a run without an identity is grouped by (a baseline's OE loss and data left out)."""
    key = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
    key["tuned"] = bool(config.get("pretrained"))
    if is_baseline(config.get("lambda_oe")):  # no OE term, so its OE loss and data do not matter
        key["loss"] = key["oe"] = None
        key["lambda_oe"] = 0.0
    return key


# identity keys never shown as a distinguishing label: the title already says them, or they follow
# from one that is shown
LABELLED = ("loss.lambda_oe", "module.lambda_oe", "loss.fn._target_", "data.name", "tuned", "task_name")


def _varying(groups: list[Group], keys: Iterable[str], value: Any) -> list[str]:
    """Keys whose value differs among ``groups``, one per pattern of values (co-varying keys such
    as an interpolated copy are shown once)."""
    shown, patterns = [], set()
    for k in sorted(keys):
        values = tuple(json.dumps(value(g, k), sort_keys=True, default=str) for g in groups)
        if len(set(values)) > 1 and values not in patterns:
            patterns.add(values)
            shown.append(k)
    return shown


def group_runs(runs: Iterable[dict[str, Any]]) -> list[Group]:
    """Runs of one experiment (equal ``group_id``: the resolved config up to seed and checkpoint
    paths) form a group, in first-seen order; a seed seen twice counts once (the first run). Older
    results without an identity are grouped by their key config values."""
    groups: dict[str, Group] = {}
    for run in runs:
        identity = upgraded_identity(run["identity"]) if run.get("identity") is not None else None
        renamed = identity is not None and identity != run["identity"]  # recorded under an earlier layout
        key = identity_hash(group_identity(identity)) if renamed else run.get("group_id") or \
            json.dumps(group_key(run.get("config", {})), sort_keys=True, default=str)
        group = groups.setdefault(key, Group(group_key(run.get("config", {})), key=key))
        if identity is not None and group.identity is None:
            group.identity = group_identity(identity)
        if run["config"].get("seed") not in group.seeds:
            group.runs.append(run)
    for g in groups.values():  # label each group by what varies among its dataset's groups
        peers = [p for p in groups.values() if p.data == g.data]
        if all(p.identity is not None for p in peers):
            candidates = [p for p in peers if p.method != "baseline"] if g.method != "baseline" else peers
            # keys every candidate has (a key only some have comes with a differing choice shown anyway)
            keys = {k for k in set.intersection(*(set(p.identity) for p in candidates))
                    if k.removeprefix("trained.") not in LABELLED}
            if g.method == "baseline":  # a baseline has no OE source or loss
                keys = {k for k in keys if not k.removeprefix("trained.").startswith(("oe.", "loss."))}
            g.distinguish = tuple(_varying(candidates, keys, lambda p, k: p.identity.get(k)))
            continue
        oe_peers = [p for p in peers if p.method != "baseline"]

        def varies(key: str, among: list[Group]) -> bool:
            return len({json.dumps(p.config.get(key), default=str) for p in among}) > 1

        g.distinguish = tuple(
            k for k in sorted({k for p in peers for k in p.config})
            if k not in ("data", "loss", "mining", "lambda_oe", "tuned")
            and (varies(k, oe_peers) if k == "oe" else varies(k, peers))
            and not (k == "oe" and g.method == "baseline"))
    return sorted(groups.values(), key=lambda g: (g.data, not is_baseline(g.lambda_oe), str(g.config.get("loss")),
                                                  g.lambda_oe, g.method, g.label))


def baseline_for(group: Group, groups: Sequence[Group]) -> Group | None:
    """The baseline on the same data whose config agrees most with ``group``'s (model and score
    first, then every other key)."""
    candidates = [g for g in groups if g.method == "baseline" and g.data == group.data]
    if not candidates:
        return None

    def agreement(g: Group) -> tuple[int, int]:
        same = [k for k in group.config if g.config.get(k) == group.config.get(k)]
        return sum(k in ("model", "score") for k in same), len(same)

    return max(candidates, key=agreement)
