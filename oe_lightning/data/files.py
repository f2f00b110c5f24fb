"""Listing files under a folder the user gave, without trusting the file system.

One walk for every folder reader (image folders for D_in, OE, OOD and validation sets; oe-predict's
input folders; oe-table's run folders): regular files only (a FIFO, socket or device named
``x.png`` is never opened, so it cannot hang a reader), every folder listed once however many links
lead to it (a link back to ``..`` or ``.`` cannot multiply the files), links that lead out of the tree
to files followed and named (datasets built as folders of links into a shared pool keep working),
links to folders out of the tree not followed (one back to ``..`` would list the tree again). What is
skipped or followed out of the tree is counted and named in one warning per tree.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("oe_lightning")

LOOP = "link(s) to a folder already listed (a loop or a second path to it), not followed"
OUTSIDE = "link(s) to files out of the folder, followed"
OUTSIDE_FOLDER = "link(s) to folders out of the folder, not followed"
NOT_REGULAR = "non-regular file(s) (FIFO, socket or device), not opened"
BROKEN = "broken link(s) or unreadable entries"


@dataclass
class Listing:
    """The regular files found under ``root`` (as paths through the tree, in torchvision's order:
    folders sorted by path, files sorted by name within each) and what was skipped, by reason."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        """Record ``path`` as skipped for ``reason``."""
        self.skipped.setdefault(reason, []).append(path)


def _inside(real: str, top: str) -> bool:
    return real == top or os.path.commonpath([real, top]) == top


def _entry_kind(path: str) -> str:
    """``dir``, ``file``, ``other`` (FIFO, socket, device) or ``broken``, following links; never opens."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "broken"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def list_files(root: str | os.PathLike, keep: Callable[[str], bool] = lambda path: True,
               hidden: bool = True) -> Listing:
    """Regular files under ``root`` whose path passes ``keep``; ``hidden=False`` leaves out names
    starting with a dot (files and folders). ``root`` itself may be a link; inside it, a linked
    folder is followed only to a folder not listed yet (real folders first, so a link never hides the
    real path) and inside ``root``; a linked file out of ``root`` is listed and recorded under
    :data:`OUTSIDE`, a linked folder out of it recorded under :data:`OUTSIDE_FOLDER` and not followed."""
    listing = Listing(Path(root))
    top = os.path.realpath(root)
    if _entry_kind(str(root)) != "dir":
        return listing
    visited = {top}
    folders: list[tuple[str, list[str]]] = []
    pending, links = [str(root)], []
    while pending or links:
        if not pending:  # every real folder is listed: now the linked ones not reached yet
            link = links.pop(0)
            real = os.path.realpath(link)
            if real in visited:
                listing.skip(LOOP, link)
                continue
            visited.add(real)
            pending.append(link)
        folder = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError:
            listing.skip(BROKEN, folder)
            continue
        names = []
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            is_link = entry.is_symlink()
            kind = _entry_kind(entry.path)
            if is_link and not _inside(os.path.realpath(entry.path), top):
                if kind == "dir":
                    listing.skip(OUTSIDE_FOLDER, f"{entry.path} -> {os.readlink(entry.path)}")
                    continue
                listing.skip(OUTSIDE, f"{entry.path} -> {os.readlink(entry.path)}")
            if kind == "dir":
                if is_link:
                    links.append(entry.path)
                else:
                    visited.add(os.path.realpath(entry.path))
                    pending.append(entry.path)
            elif not keep(entry.path):
                continue
            elif kind == "file":
                names.append(entry.name)
            else:
                listing.skip(NOT_REGULAR if kind == "other" else BROKEN, entry.path)
        folders.append((folder, names))
    listing.files = [Path(folder, name) for folder, names in sorted(folders) for name in names]
    return listing


_WARNED: set[str] = set()


def warn_skipped(listings: Iterable[Listing], what: str) -> int:
    """One warning (once per process) counting and naming what ``listings`` skipped or followed out of
    their folder; returns that count."""
    listings = list(listings)
    parts, total = [], 0
    for reason in (LOOP, OUTSIDE_FOLDER, OUTSIDE, NOT_REGULAR, BROKEN):
        paths = [p for listing in listings for p in listing.skipped.get(reason, [])]
        if paths:
            total += len(paths)
            parts.append(f"{len(paths)} {reason}: {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}")
    if parts:
        message = f"{what}: {'; '.join(parts)}"
        if message not in _WARNED:
            _WARNED.add(message)
            log.warning("%s", message)
    return total


def regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (following links), checked without opening it."""
    return _entry_kind(str(path)) == "file"
