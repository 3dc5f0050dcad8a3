import json
from pathlib import Path

import pytest

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine, sha256_file
from harness.errors import HarnessError
from harness.models.registry import resolve_model


def test_sidecar_records_what_rebuilds_and_verifies_the_artifact(digits_engine):
    side = json.loads(Path(digits_engine.artifact).with_suffix(".json").read_text())
    assert side["model"]["name"] == "digits-resnet"
    assert side["precision"] == "fp32"
    assert side["input_shape"] == [1, 32, 32] and side["batch"] == [1, 1, 64]
    assert side["onnx_sha256"] == sha256_file(Path(side["onnx_path"]))
    assert {"torch", "onnx", "onnxruntime", "harness"} <= set(side["versions"])
    assert side["build_s"] >= 0


def test_same_request_is_a_cache_hit_and_other_shapes_are_not(digits_engine, engines_dir):
    spec = resolve_model("digits-resnet")
    again, hit = build_artifact(spec, "cpu", BuildOptions(batch_max=64), engines_dir)
    assert hit and again.artifact == digits_engine.artifact
    other, hit = build_artifact(spec, "cpu", BuildOptions(batch_max=16), engines_dir)
    assert not hit and other.key != digits_engine.key


def test_truncated_artifact_is_refused_then_rebuilt(tmp_path):
    spec = resolve_model("digits-resnet")
    meta, _ = build_artifact(spec, "cpu", BuildOptions(), tmp_path)
    artifact = Path(meta.artifact)
    artifact.write_bytes(artifact.read_bytes()[:100])
    with pytest.raises(HarnessError, match="truncated or modified"):
        load_engine(artifact)
    rebuilt, hit = build_artifact(spec, "cpu", BuildOptions(), tmp_path)
    assert not hit and sha256_file(artifact) == rebuilt.artifact_sha256
    load_engine(artifact)
