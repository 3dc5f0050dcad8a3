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


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_other_torchvision_models_resolve(name):
    spec = resolve_model(name)
    assert spec.input_shape == (3, 224, 224) and spec.num_classes == 1000
