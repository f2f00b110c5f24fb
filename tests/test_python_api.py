"""The Python API without Hydra, as the README shows it: plain datasets in, named OOD sets out."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_example() -> str:
    """The README's "Python, without Hydra" code block."""
    text = README.read_text()
    section = text[text.index("## Python, without Hydra"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_scores_named_ood_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    results = namespace["results"]
    assert list(results["ood"]) == ["noise", "photos"]  # names from the dict passed to trainer.test
    assert list(results["detectors"]) == ["msp", "knn"] and results["detector"] == "msp"
    assert results["scored"]["fit"] == len(namespace["train"]) == 1258  # KNN fitted on every training image
    assert set(results["ood"]["noise"]) == {"fpr95", "auroc", "aupr_in", "aupr_out"}
    assert results["id_accuracy"] > 0.5  # 3 epochs on digits: far above 10% chance
    # the example's own metric call agrees with the module's numbers for the noise set
    assert namespace["by_hand"]["auroc"] == pytest.approx(results["ood"]["noise"]["auroc"], abs=1e-9)


def test_top_level_exports_resolve_and_import_lazily():
    import subprocess
    import sys

    import oe_lightning

    for name in oe_lightning.__all__:
        assert getattr(oe_lightning, name) is not None, name
    from oe_lightning import OEDataModule, OutlierExposureModule, ood_metrics  # noqa: F401

    code = "import sys, oe_lightning; print('torch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_oe_datasets_of_images_single_tuples_or_pairs_all_give_image_batches():
    from torch.utils.data import TensorDataset

    from oe_lightning import OEDataModule

    images = torch.rand(40, 1, 4, 4)
    labelled = TensorDataset(torch.rand(30, 1, 4, 4), torch.randint(0, 2, (30,)))
    for oe in (TensorDataset(images), labelled, [img for img in images]):
        dm = OEDataModule(train=labelled, test=labelled, num_classes=2, oe=oe, batch_size=4,
                          oe_batch_size=6, val_fraction=0.0)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))[0]
        assert batch["oe"].shape == (6, 1, 4, 4) and batch["in"][0].shape == (4, 1, 4, 4)


def test_a_list_of_loaders_without_names_gets_numbered_names_and_a_dict_needs_in(tmp_path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from oe_lightning import KNN, OEUserError, OODEvaluation, SmallCNN

    g = torch.Generator().manual_seed(0)
    ind = TensorDataset(torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 3, (20,), generator=g))
    ood = TensorDataset(torch.rand(15, 1, 8, 8, generator=g))
    evaluation = OODEvaluation(SmallCNN(num_classes=3, in_channels=1, width=4))
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(evaluation, dataloaders=[DataLoader(ind, batch_size=8), DataLoader(ood, batch_size=8)],
                 verbose=False)
    assert list(evaluation.results["ood"]) == ["ood_1"]
    with pytest.raises(OEUserError, match="none of them 'in'"):
        trainer.test(evaluation, dataloaders={"id": DataLoader(ind), "x": DataLoader(ood)}, verbose=False)
    knn = OODEvaluation(SmallCNN(num_classes=3, in_channels=1, width=4), {"knn": KNN(k=3)})
    with pytest.raises(OEUserError, match="fitted on the ID training set, and no loader is named 'fit'"):
        trainer.test(knn, dataloaders={"in": DataLoader(ind), "x": DataLoader(ood)}, verbose=False)
