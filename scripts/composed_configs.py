"""Compose every preset of ``conf/`` and compare the results between two git revisions.

A YAML restructuring must leave every composed config as it was: this script composes each entry
point with each preset (every experiment, search, speed, trainer, logger, loss, model, data, OOD
suite and detector choice), resolves it, and prints the presets whose resolved config differs.

    python scripts/composed_configs.py --rev HEAD~3 --rev HEAD      # exit 1 if any preset differs
    python scripts/composed_configs.py --dump OUT_DIR               # the working tree's configs as JSON
    python scripts/composed_configs.py --repetition                 # share of YAML lines repeated
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def presets(conf: Path) -> list[tuple[str, list[str]]]:
    """``(config_name, overrides)`` for every composition compared."""
    def choices(group: str) -> list[str]:
        folder = conf / group
        return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")
                      if not p.name.startswith("_")) if folder.is_dir() else []

    runs: list[tuple[str, list[str]]] = [("train", []), ("eval", ["ckpt_path=x.ckpt"]),
                                         ("predict", ["ckpt_path=x.ckpt", "input=x"]),
                                         ("export", ["ckpt_path=x.ckpt"])]
    runs += [("train", [f"experiment={e}"]) for e in choices("experiment")]
    runs += [("train", [f"experiment={e}", "speed=gpu"]) for e in choices("experiment") if e.startswith("paper/")]
    for group in ("hparams_search", "speed", "trainer", "logger", "loss", "model", "data", "ood", "debug",
                  "calibration", "val_ood", "oe", "optim", "evaluation"):
        runs += [("train", [f"{group}={c}"]) for c in choices(group)]
    runs += [("train", [f"detector=[{d}]"]) for d in choices("detector")]
    runs += [("eval", ["ckpt_path=x.ckpt", f"detector=[{d}]"]) for d in choices("detector")]
    return runs


def repetition(conf: Path, window: int = 6) -> tuple[int, int]:
    """``(lines, repeated)``: non-comment YAML lines, and those inside a ``window``-line run that
    occurs more than once across ``conf/``."""
    files = [[line.rstrip() for line in p.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
             for p in sorted(conf.rglob("*.yaml"))]
    counts: dict[tuple[str, ...], int] = {}
    for lines in files:
        for i in range(len(lines) - window + 1):
            counts[tuple(lines[i:i + window])] = counts.get(tuple(lines[i:i + window]), 0) + 1
    repeated = 0
    for lines in files:
        marked = set()
        for i in range(len(lines) - window + 1):
            if counts[tuple(lines[i:i + window])] > 1:
                marked.update(range(i, i + window))
        repeated += len(marked)
    return sum(len(lines) for lines in files), repeated


def dump(conf: Path, out: Path) -> None:
    """Write each composition's resolved config (the ``hydra`` node left out) as JSON into ``out``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    sys.path.insert(0, str(conf.parent))
    import oe_lightning.config  # noqa: F401  (registers the oe.* resolvers)

    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in presets(conf):
        key = "__".join([name, *overrides]).replace("/", "~")
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(conf), version_base="1.3"):
            try:
                cfg = compose(name, overrides=overrides, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                OmegaConf.set_struct(cfg, False)
                cfg.pop("hydra")
                text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, indent=1)
            except Exception as err:  # noqa: BLE001 - a preset that fails to compose is a result too
                text = f"error: {type(err).__name__}: {err}"
        (out / f"{key}.json").write_text(text)


def dump_revision(rev: str, out: Path) -> None:
    """Check ``rev`` out into a temporary tree and dump its configs with this script."""
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(f"git -C {ROOT} archive {rev} | tar -x -C {tree}", shell=True, check=True)
        subprocess.run([sys.executable, __file__, "--dump", str(out), "--conf", str(Path(tree) / "conf")],
                       check=True, cwd=tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", action="append", default=[], help="two git revisions to compare")
    parser.add_argument("--dump", type=Path, help="write the composed configs of --conf here")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf")
    parser.add_argument("--ignore", action="append", default=[], help="a top-level key left out of the comparison")
    parser.add_argument("--repetition", action="store_true", help="print the share of repeated YAML lines")
    args = parser.parse_args()
    if args.repetition:
        total, repeated = repetition(args.conf)
        print(f"{repeated} of {total} non-comment lines in {args.conf} repeat in 6-line windows "
              f"({100 * repeated / total:.1f}%)")
        return 0
    if args.dump:
        dump(args.conf.resolve(), args.dump)
        return 0
    if len(args.rev) != 2:
        parser.error("give --rev twice (or --dump)")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / "a", Path(tmp) / "b"]
        for rev, folder in zip(args.rev, dirs, strict=True):
            dump_revision(rev, folder)
        names = sorted({p.name for d in dirs for p in d.glob("*.json")})
        differ = []
        for name in names:
            texts = [(d / name).read_text() if (d / name).exists() else "missing" for d in dirs]
            if args.ignore and not any(t.startswith(("error", "missing")) for t in texts):
                loaded = [json.loads(t) for t in texts]
                texts = [json.dumps({k: v for k, v in c.items() if k not in args.ignore}, sort_keys=True)
                         for c in loaded]
            if texts[0] != texts[1]:
                differ.append(name)
        errors = [n for n in names if (dirs[1] / n).exists() and (dirs[1] / n).read_text().startswith("error")]
        print(f"{len(names)} compositions compared, {len(differ)} differ, "
              f"{len(errors)} fail to compose in {args.rev[1]}")
        for name in differ:
            print("  differs:", name.removesuffix(".json").replace("~", "/"))
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
