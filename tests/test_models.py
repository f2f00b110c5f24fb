import pytest
import torch

from oe_lightning.checkpoints import load_backbone_weights
from oe_lightning.models import SmallCNN, WideResNet, torchvision_classifier, wrn_16_4, wrn_40_2

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def paper_wrn_keys(depth: int, widen: int, num_classes: int) -> dict[str, tuple]:
    """Key names and shapes of the paper's released WRN state_dicts, written out from its layout."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    keys = {"conv1.weight": (16, 3, 3, 3)}
    for b in (1, 2, 3):
        for i in range(n):
            c_in = widths[b - 1] if i == 0 else widths[b]
            c_out = widths[b]
            p = f"block{b}.layer.{i}."
            keys.update({p + "bn1." + k: (c_in,) for k in BN})
            keys[p + "conv1.weight"] = (c_out, c_in, 3, 3)
            keys.update({p + "bn2." + k: (c_out,) for k in BN})
            keys[p + "conv2.weight"] = (c_out, c_out, 3, 3)
            if i == 0 and c_in != c_out:
                keys[p + "convShortcut.weight"] = (c_out, c_in, 1, 1)
    keys.update({"bn1." + k: (widths[3],) for k in BN})
    keys.update({"fc.weight": (num_classes, widths[3]), "fc.bias": (num_classes,)})
    for k in [k for k in keys if k.endswith("num_batches_tracked")]:
        keys[k] = ()
    return keys


@pytest.mark.parametrize("builder,depth,widen", [(wrn_40_2, 40, 2), (wrn_16_4, 16, 4)])
def test_wrn_state_dict_has_the_papers_names_and_shapes(builder, depth, widen):
    model = builder(num_classes=100)
    expected = paper_wrn_keys(depth, widen, 100)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_a_paper_style_checkpoint_without_num_batches_tracked_loads_strictly(tmp_path):
    source = wrn_40_2(num_classes=10)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    old_style = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "cifar10_wrn_pretrained_epoch_99.pt"
    torch.save(old_style, path)
    target = wrn_40_2(num_classes=10)
    load_backbone_weights(target, path, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    source.eval()
    target.eval()
    assert torch.allclose(source(x), target(x))
    target.load_state_dict(source.state_dict(), strict=True)


def test_wrn_dropout_rates_and_sizes():
    assert wrn_40_2().block1.layer[0].drop_rate == 0.3
    assert wrn_16_4().block3.layer[0].drop_rate == 0.4
    assert sum(p.numel() for p in wrn_40_2().parameters()) == pytest.approx(2.24e6, rel=0.01)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=41)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_small_input_backbones_map_images_to_logits(shape):
    x = torch.randn(2, *shape)
    assert SmallCNN(num_classes=7, in_channels=shape[0])(x).shape == (2, 7)
    resnet = torchvision_classifier("resnet18", num_classes=7, in_channels=shape[0], small_input=True)
    assert resnet(x).shape == (2, 7)
    assert resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, torch.nn.Identity)


def _contract_models():
    import timm

    return {
        "wrn_16_4": (wrn_16_4(num_classes=5), (3, 32, 32), (256, 8, 8)),
        "small_cnn": (SmallCNN(num_classes=5, in_channels=1, width=4), (1, 8, 8), (8, 4, 4)),
        "timm_resnet18": (timm.create_model("resnet18", num_classes=5), (3, 32, 32), (512, 1, 1)),
        "tv_mobilenet_v3_small": (torchvision_classifier("mobilenet_v3_small", num_classes=5), (3, 32, 32), (1024,)),
        "tv_resnet18": (torchvision_classifier("resnet18", num_classes=5, small_input=True), (3, 32, 32), (512,)),
    }


@pytest.mark.parametrize("name", list(_contract_models()))
def test_every_bundled_backbone_keeps_the_feature_contract(name):
    """forward_head(forward_features(x)) is the model's own output; pre_logits is the vector its
    classifier reads (timm's contract, checked across models as timm's own tests do)."""
    from oe_lightning.models.contract import feature_backbone

    model, shape, feature_shape = _contract_models()[name]
    model.eval()
    view = feature_backbone(model)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        maps = view.forward_features(x)
        pre = view.forward_head(maps, pre_logits=True)
        assert maps.shape[1:] == feature_shape and pre.ndim == 2
        torch.testing.assert_close(view.forward_head(maps), model(x))
        torch.testing.assert_close(view.get_classifier()(pre), model(x))


def test_a_module_without_the_contract_is_refused_by_feature_detectors_with_the_contract_named():
    from oe_lightning.errors import OEUserError
    from oe_lightning.models.contract import feature_backbone

    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with pytest.raises(OEUserError, match="knn needs penultimate features.*forward_features"):
        feature_backbone(plain, needed_by="knn")
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        torchvision_classifier("resnet_nonexistent")
