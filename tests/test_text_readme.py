"""The README's text benchmark block, as printed (its own file: xdist runs files on separate workers, and
tests/test_readme.py is long already)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import SAFETY_TIMEOUT, cli_env
from tests.test_readme import block_commands


@pytest.mark.slow
def test_the_text_benchmark_block_runs_as_printed_and_oe_lowers_the_fpr90(tmp_path):
    """The embedded text benchmark as printed, 2 epochs each (the README's numbers are 5): OE's mean FPR90 (MSP)
    is below the baseline's, and oe-table compares them in FPR90."""
    commands = block_commands("## Text classifiers")
    assert [c[0] for c in commands] == ["oe-train", "oe-train", "oe-table"]
    env = cli_env(tmp_path)
    for words in commands:
        args = [*words[1:], "trainer.max_epochs=2"] if words[0] == "oe-train" else [*words[1:], "--format", "md"]
        proc = subprocess.run([shutil.which(words[0]), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
        assert proc.returncode == 0, " ".join(words) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    base, oe = (json.loads((tmp_path / "outputs" / "text" / name / "results.json").read_text())
                for name in ("baseline", "oe"))
    assert list(oe["ood"]) == ["movie_plots", "speeches", "hamlet"] and oe["config"]["protocol"] == "paper_text"
    assert oe["mean"]["fpr90"] < base["mean"]["fpr90"] - 0.02  # measured: 0.7945 -> 0.7183 at 2 epochs
    assert "| mean | " in proc.stdout and "FPR90 ↓ base" in proc.stdout
    assert (tmp_path / "outputs" / "text" / "oe" / "plots" / "gallery_hamlet.md").is_file()
