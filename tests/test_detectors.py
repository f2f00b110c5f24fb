"""Each detector against pytorch-ood (a test oracle only, in the dev extra) on one small model and data."""

from __future__ import annotations

import pytest
import torch

from oe_lightning.detectors import ASH, KNN, ODIN, Mahalanobis, Outputs, ReAct, ViM, as_detector
from oe_lightning.errors import OEUserError
from oe_lightning.models import SmallCNN
from oe_lightning.scores import Energy, MaxLogit, MaxSoftmax

pood = pytest.importorskip("pytorch_ood.detector")


@pytest.fixture(scope="module")
def setup():
    """A small CNN with a non-zero bias, random images (for the detectors that run the model) and
    well-conditioned synthetic penultimate features of 300 ID training samples in 4 classes and
    120 test samples with the CNN's head on top (for the detectors that read stored features)."""
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, in_channels=3, width=8).eval()
    with torch.no_grad():
        model.fc.bias.copy_(torch.randn(4))
        model.fc.weight.mul_(4)
    g = torch.Generator().manual_seed(1)
    x_test = torch.rand(120, 3, 12, 12, generator=g)
    y_train = torch.arange(300) % 4
    scales = torch.linspace(0.3, 2.0, 16)
    centres = 1.5 * torch.randn(4, 16, generator=g)
    z_train = torch.randn(300, 16, generator=g) * scales + centres[y_train] + 2
    z_test = torch.randn(120, 16, generator=g) * scales * 1.5 + 2

    def outputs(z, y=None):
        with torch.no_grad():
            return Outputs(model.fc(z), z, y)

    return model, x_test, outputs(z_train, y_train), outputs(z_test)


def test_logit_detectors_equal_pytorch_oods(setup):
    model, x, _, _ = setup
    with torch.no_grad():
        test = Outputs(model(x))
        for ours, theirs in ((MaxSoftmax(), pood.MaxSoftmax(model)), (MaxLogit(), pood.MaxLogit(model)),
                             (Energy(), pood.EnergyBased(model))):
            torch.testing.assert_close(as_detector(ours).score(test), theirs.predict(x), rtol=1e-5, atol=1e-5)


def test_mahalanobis_is_pytorch_oods_up_to_its_scaling(setup):
    """pytorch-ood sums the within-class outer products without dividing by N (+1e-6 I) and returns
    half the squared distance; the authors' code (sklearn EmpiricalCovariance) divides by N, as we do.
    So ours = 2 N × theirs, exactly up to the 1e-6 ridge."""
    _, _, train, test = setup
    ours = Mahalanobis().fit(train).score(test)
    theirs = pood.Mahalanobis(None).fit_features(train.features.double(), train.labels)
    theirs.mu, theirs.precision = theirs.mu.double(), theirs.precision.double()
    theirs = theirs.predict_features(test.features.double())
    torch.testing.assert_close(ours, 2 * len(train) * theirs, rtol=1e-5, atol=1e-5)
    # and it is the textbook distance: min over classes of (z - mu_c)^T S^-1 (z - mu_c)
    z, y = train.features.double(), train.labels
    mu = torch.stack([z[y == c].mean(0) for c in range(4)])
    cov = sum((z[y == c] - mu[c]).T @ (z[y == c] - mu[c]) for c in range(4)) / len(z)
    diff = test.features.double()[:, None, :] - mu[None]
    expected = torch.einsum("ncd,de,nce->nc", diff, torch.linalg.inv(cov), diff).min(1).values
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_knn_equals_pytorch_oods_and_chunking_changes_nothing(setup, k):
    _, _, train, test = setup
    theirs = pood.KNN(None, k=k).fit_features(train.features, train.labels).predict_features(test.features)
    ours = KNN(k=k).fit(train).score(test)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-5)
    tiny_chunks = KNN(k=k, chunk_size=8).fit(train).score(test)  # train chunks of 32, query chunks of 8
    torch.testing.assert_close(tiny_chunks, ours, rtol=1e-6, atol=1e-6)
    # faiss's exact flat index finds the candidates, re-measured as the torch path: the same distances
    pytest.importorskip("faiss")
    assert torch.equal(KNN(k=k, backend="faiss", chunk_size=8).fit(train).score(test), ours)


def test_vim_equals_pytorch_oods(setup):
    model, _, train, test = setup
    ours = ViM(d=6).fit(train, model.fc).score(test, model.fc)
    theirs = pood.ViM(None, d=6, w=model.fc.weight, b=model.fc.bias).fit_features(
        train.features, train.labels).predict_features(test.features)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-5)


def test_react_equals_pytorch_oods(setup):
    model, _, train, test = setup
    ours = ReAct(percentile=0.9).fit(train).score(test, model.fc)
    theirs = pood.ReAct(None, model.fc, percentile=0.9).fit_feature_maps(train.features, train.labels)
    torch.testing.assert_close(ours, theirs.predict_feature_maps(test.features), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["b", "p", "s"])
def test_ash_on_feature_maps_equals_pytorch_oods(setup, variant):
    model, x, _, _ = setup
    with torch.no_grad():
        ours = ASH(variant=variant, percentile=0.65).score_batch(model, model, x, model.forward_features(x))
        theirs = pood.ASH(model.forward_features, model.forward_head, variant=f"ash-{variant}",
                          percentile=0.65).predict(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_odin_equals_pytorch_oods_also_under_inference_mode(setup):
    model, x, _, _ = setup
    std = [0.2, 0.25, 0.3]
    theirs = pood.ODIN(model, eps=0.002, temperature=100.0, norm_std=std).predict(x)
    with torch.inference_mode():  # as in Lightning's test loop
        ours = ODIN(temperature=100.0, eps=0.002, norm_std=std).score_batch(model, None, x, None)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    no_step = ODIN(temperature=100.0, eps=0.0).score_batch(model, None, x, None)
    with torch.no_grad():
        torch.testing.assert_close(no_step, -torch.softmax(model(x) / 100.0, 1).max(1).values)


def test_bad_hyperparameters_are_refused_with_the_value_named():
    with pytest.raises(OEUserError, match="knn: k must be >= 1, got 0"):
        KNN(k=0)
    with pytest.raises(OEUserError, match="react: percentile is a fraction in \\(0, 1\\], got 90"):
        ReAct(percentile=90)
    with pytest.raises(OEUserError, match="ash: variant must be one of"):
        ASH(variant="x")
    with pytest.raises(RuntimeError, match="KNN is not fitted"):
        KNN().score(Outputs(torch.zeros(2, 3), torch.zeros(2, 4)))
