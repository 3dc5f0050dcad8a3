import numpy as np
import pytest
import torch

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine
from harness.data.datasets import resolve_dataset
from harness.measure.evaluate import evaluate
from harness.models.registry import load_model, resolve_model


def test_digits_splits_are_seeded_and_disjoint():
    data = resolve_dataset("digits", resolve_model("digits-resnet"))
    idx = data.indices
    assert sum(len(v) for v in idx.values()) == 1797
    assert not set(idx["train"]) & set(idx["val"]) and not set(idx["calib"]) & set(idx["val"])
    assert not set(idx["train"]) & set(idx["calib"])
    again = resolve_dataset("digits", resolve_model("digits-resnet"))
    assert all(np.array_equal(idx[s], again.indices[s]) for s in idx)
    x, y = data.take("val", 5)
    assert x.shape == (5, 1, 32, 32) and x.dtype == np.float32 and y.shape == (5,)


def test_digits_adapts_to_a_three_channel_model():
    x, _ = resolve_dataset("digits", resolve_model("resnet18", input_shape="3x64x64")).take("val", 2)
    assert x.shape == (2, 3, 64, 64)


def test_imagefolder_reads_users_images(tmp_path):
    from PIL import Image

    for label, colour in (("cat", 40), ("dog", 200)):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (40, 30), (colour, colour, i)).save(tmp_path / label / f"{i}.png")
    data = resolve_dataset(f"imagefolder:{tmp_path}", resolve_model("resnet18", input_shape="3x32x32"))
    (_xc, yc), (xv, yv) = data.take("calib", 100), data.take("val", 100)
    assert len(yc) + len(yv) == 10 and set(yc) | set(yv) == {0, 1}
    assert xv.shape[1:] == (3, 32, 32)


def test_user_factory_and_weights_file(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def tiny():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = resolve_model("mymodels:tiny", input_shape="3x16x16")
    state = {k: torch.full_like(v, 0.01) for k, v in load_model(spec).state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    spec = resolve_model("mymodels:tiny", weights=str(tmp_path / "w.pt"), input_shape="3x16x16")
    assert torch.equal(load_model(spec)[0].weight, state["0.weight"])
    meta, _ = build_artifact(spec, "cpu", BuildOptions(batch_max=4), tmp_path / "engines")
    _, runner = load_engine(meta.artifact)
    res = evaluate(runner, resolve_dataset("synthetic", spec), batch=(1, 4), limit=8)
    assert res.top1 is None and res.top1_agreement == 100.0


def test_resnet18_random_weights_are_reproducible_and_run_on_cpu(tmp_path):
    spec = resolve_model("resnet18", input_shape="3x64x64")
    a, b = load_model(spec), load_model(spec)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    meta, _ = build_artifact(spec, "cpu", BuildOptions(batch_max=4), tmp_path)
    _, runner = load_engine(meta.artifact)
    res = evaluate(runner, resolve_dataset("digits", spec), batch=(1, 4), limit=8)
    assert res.top1_agreement == 100.0 and res.sqnr_db > 60


@pytest.mark.parametrize("name, side", [("resnet50", 224), ("mobilenet_v2", 224), ("vit_b_16", 224),
                                        ("swin_t", 224), ("convnext_tiny", 224), ("inception_v3", 299)])
def test_torchvision_classifiers_resolve_at_their_native_size(name, side):
    spec = resolve_model(name)
    assert spec.input_shape == (3, side, side) and spec.num_classes == 1000


def test_every_torchvision_classifier_is_accepted_without_importing_torch():
    import subprocess
    import sys

    import torchvision

    from harness.models.registry import TORCHVISION

    assert set(TORCHVISION) == set(torchvision.models.list_models(module=torchvision.models))
    code = ("import sys; from harness.models.registry import resolve_model; resolve_model('efficientnet_b0'); "
            "assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unknown_model_is_one_line_with_the_closest_names():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError) as err:
        resolve_model("vit_b16")
    assert "did you mean vit_b_16" in err.value.message and "\n" not in err.value.message


def test_a_torchvision_transformer_builds_seeded():
    spec = resolve_model("swin_t")
    a, b = load_model(spec), load_model(spec)
    assert torch.equal(a.head.weight, b.head.weight) and not a.training
