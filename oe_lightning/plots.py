"""Pictures of an evaluation, written into the run directory's ``plots/``: the ID and OOD score
histograms with the deployed threshold drawn on them, and per OOD set a gallery of its most and
least OOD-looking test images with their scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from oe_lightning.escaping import mathtext

GALLERY_SIZE = 8  # images per row: the most OOD-looking, then the least


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_figure(histograms: Mapping[str, Mapping[str, Sequence[float]]], threshold: float | None,
                     detector: str, path: Path) -> Path:
    """One panel per OOD set: its score histogram over the ID test set's, shared bins, and the
    threshold above which the deployed model answers "OOD"."""
    plt = _pyplot()
    names = list(histograms)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        h = histograms[name]
        # one filled step outline per histogram (a bar per bin was a patch per bin: ~0.1 s a panel)
        ax.stairs(h["in"], h["edges"], fill=True, alpha=0.55, label="ID test", color="tab:blue")
        ax.stairs(h["out"], h["edges"], fill=True, alpha=0.55, label=mathtext(name, legend=True), color="tab:red")
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(mathtext(name), fontsize=9)  # names drawn as written, never as mathtext
        ax.set_xlabel(mathtext(f"{detector} score (larger = more OOD)"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def extremes(scores: Tensor, k: int = GALLERY_SIZE) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` highest scores (most OOD-looking) and the ``k`` lowest, each in order."""
    order = torch.argsort(scores.double(), descending=True, stable=True).tolist()
    k = min(k, len(order))
    return order[:k], order[::-1][:k]


def gallery_figure(name: str, images: Tensor, scores: Sequence[float], threshold: float | None, path: Path) -> Path:
    """Two rows of images in [0, 1] (``2k``: the most OOD-looking first), each labelled with its score
    and, given a threshold, the deployed decision. Each row is one picture (torchvision's
    ``make_grid``), so the figure has two axes rather than one per image."""
    from torchvision.utils import make_grid

    plt = _pyplot()
    k = len(images) // 2
    pad = 2
    fig, axes = plt.subplots(2, 1, figsize=(1.3 * k, 3.6), dpi=110, squeeze=False)
    for row, (ax, label) in enumerate(zip(axes[:, 0], ("most OOD", "least OOD"), strict=True)):
        part = images[row * k:(row + 1) * k].clamp(0, 1)
        grid = make_grid(part, nrow=k, padding=pad, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        width = part.shape[-1]
        for i in range(len(part)):
            score = scores[row * k + i]
            decision = "" if threshold is None else (" ood" if score > threshold else " in")
            ax.text(pad + i * (width + pad) + width / 2, -1, f"{score:.3g}{decision}", ha="center", va="bottom",
                    fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, fontsize=8)
    fig.suptitle(mathtext(f"{name}: most and least OOD-looking test images (score, decision)"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def safe_name(name: str) -> str:
    """``name`` as a file-name part: letters, digits, ``-_.``; anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def text_gallery(name: str, texts: Sequence[str], scores: Tensor, threshold: float | None, path: Path,
                 width: int = 200) -> Path:
    """A Markdown table of an OOD set's most and least OOD-looking texts (cut to ``width`` characters), with
    their scores and whether the deployed threshold calls them OOD: the text data's gallery."""
    from oe_lightning.escaping import markdown

    top, bottom = extremes(scores)
    lines = [f"# {markdown(name)}: most and least OOD-looking texts", "",
             "| rank | score | called OOD | text |", "| --- | --- | --- | --- |"]
    for label, indices in (("most", top), ("least", bottom)):
        for rank, i in enumerate(indices, 1):
            called = "" if threshold is None else ("yes" if float(scores[i]) > threshold else "no")
            text = texts[i] if len(texts[i]) <= width else texts[i][:width - 1] + "…"
            lines.append(f"| {label} {rank} | {float(scores[i]):.4f} | {called} | {markdown(text)} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def unnormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalised images back to [0, 1] for display."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return images * s + m
