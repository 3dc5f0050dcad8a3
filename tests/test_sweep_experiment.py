"""Experiment files are read strictly, the matrix expands as documented, and shards partition it."""

import dataclasses
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.sweep.experiment import LATER_TIMING_KEYS, load_experiment
from harness.sweep.matrix import Cell, baseline_of, cell_id, check_baseline, expand, parse_shard, shard, work_key

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, needles",
    [
        ("models: [digits-resnet]\nprecisions: [fp32]\nbatchsizes: [1]\n",
         ["exp.yaml: batchsizes: unknown key", "batch_sizes"]),
        ("models: [digits-resnet]\nprecisions: [fp32, int4]\n",
         ["precisions[1]: 'int4' is not allowed", "fp32, fp16, bf16, int8, int8-fp16, fp8, fp8-fp16"]),
        ("models: [digits-resnet]\nprecisions: [int8]\nquantization: {calibrators: [minmax]}\n",
         ["quantization.calibrators[0]: 'minmax'", "max, percentile, entropy, mse"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\ntiming: {repeat: 3}\n",
         ["timing.repeat: unknown key", "repeats"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\nbackends: [gpu]\n",
         ["backends[0]: 'gpu' is not allowed", "cpu, tensorrt, torch"]),
        ("models: [resnet9000]\nprecisions: [fp32]\n", ["models[0]: unknown model 'resnet9000'"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\nbatch_sizes: [0]\n",
         ["batch_sizes[0]: 0 must be a positive integer"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\nexclude: [{precison: fp32}]\n",
         ["exclude[0].precison: unknown key", "precision"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\ndatasets: [mnist]\n",
         ["datasets: 'mnist' is not allowed", "imagefolder:PATH"]),
        ("models: [digits-resnet]\nprecisions: [int8]\nquantization: {quantize_head: yes please}\n",
         ["quantization.quantize_head: 'yes please' must be true or false"]),
        ("models: [digits-resnet]\nprecisions: [fp32]\ntiming: {cuda_binding: cupy}\n",
         ["timing.cuda_binding: 'cupy'", "auto, cuda-python, pycuda, torch"]),
        ("precisions: [fp32]\n", ["models: is required"]),
        ("models: [digits-resnet\n", ["not valid YAML"]),
    ],
)
def test_bad_experiment_names_file_key_and_allowed_values(tmp_path, text, needles):
    with pytest.raises(HarnessError) as err:
        load_experiment(write(tmp_path, text))
    for needle in needles:
        assert needle in err.value.message, err.value.message


def test_quantized_precisions_expand_over_modes_and_calibrators_with_include_and_exclude(tmp_path):
    exp = load_experiment(write(tmp_path, """
models: [digits-resnet]
precisions: [fp32, int8]
batch_sizes: [1, 8]
quantization: {modes: [naive, selective], calibrators: [max, entropy]}
exclude: [{mode: naive, calibrator: entropy}]
include: [{precision: int8-fp16, mode: selective, calibrator: entropy, batch: 64}]
"""))
    cells = expand(exp)
    fp32 = [c for c in cells if c.precision == "fp32"]
    int8 = [c for c in cells if c.precision == "int8"]
    assert {(c.mode, c.calibrator) for c in fp32} == {(None, None)} and len(fp32) == 2
    assert {(c.mode, c.calibrator) for c in int8} == {("naive", "max"), ("selective", "max"),
                                                      ("selective", "entropy")}
    assert len(int8) == 6
    assert [c for c in cells if c.precision == "int8-fp16"] == [
        Cell("digits-resnet", "digits", "cpu", "int8-fp16", "pq", "selective", "entropy", 64)]
    assert exp.build["max_batch"] == 64  # the largest batch anywhere fits every engine
    assert baseline_of(exp, int8[0]) == Cell("digits-resnet", "digits", "cpu", "fp32", None, None, None, int8[0].batch)


def test_cell_ids_are_content_hashes(tmp_path):
    text = "models: [digits-resnet]\nprecisions: [fp32]\nbatch_sizes: [1, 2]\n"
    a, b = load_experiment(write(tmp_path, text)), load_experiment(write(tmp_path, text))
    assert [cell_id(a, c) for c in expand(a)] == [cell_id(b, c) for c in expand(b)]
    assert len({cell_id(a, c) for c in expand(a)}) == 2
    ids = [cell_id(a, c) for c in expand(a)]
    # timing keys added later, at their defaults, hash as the timing section did before them: stored ids hold
    before = dataclasses.replace(a, timing={k: v for k, v in a.timing.items() if k not in LATER_TIMING_KEYS})
    assert [cell_id(before, c) for c in expand(before)] == ids
    profiled = load_experiment(write(tmp_path, text + "timing: {profile: true}\n"))
    assert not set(cell_id(profiled, c) for c in expand(profiled)) & set(ids)
    longer = load_experiment(write(tmp_path, text + "timing: {duration_s: 5}\n"))
    assert not {cell_id(a, c) for c in expand(a)} & {cell_id(longer, c) for c in expand(longer)}


def test_baseline_must_be_in_the_matrix(tmp_path):
    exp = load_experiment(write(tmp_path, "models: [digits-resnet]\nprecisions: [int8]\n"))
    with pytest.raises(HarnessError, match="baseline: {precision: fp32} matches no cell"):
        check_baseline(exp, expand(exp))


def test_shards_partition_the_matrix_and_keep_shared_work_together():
    exp = load_experiment(REPO / "experiments" / "quickstart.yaml")
    cells = expand(exp)
    parts = [shard(cells, k, 3) for k in (1, 2, 3)]
    assert sorted(map(str, sum(parts, []))) == sorted(map(str, cells))
    assert all(parts) and len({c for p in parts for c in p}) == len(cells)
    owner = {work_key(c): k for k, p in enumerate(parts) for c in p}
    assert all(owner[work_key(c)] == k for k, p in enumerate(parts) for c in p)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(HarnessError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("name", ["quickstart.yaml", "resnet50_gpu.yaml", "modelopt.yaml", "fp8.yaml"])
def test_bundled_experiments_are_valid(name):
    exp = load_experiment(REPO / "experiments" / name)
    cells = expand(exp)
    check_baseline(exp, cells)
    assert {"fp32", "int8", "fp8"} <= {c.precision for c in cells}  # FP8 cells beside INT8 in every one
    fp8 = [c for c in cells if c.precision == "fp8"]
    assert all(c.calibrator in ("max", "percentile") for c in fp8 if c.tool == "pq")
    if name == "quickstart.yaml":
        assert len(fp8) == 2  # the quickstart stays short: FP8 selective/max at its two batch sizes


def test_quantization_flags_reach_the_cells_config(tmp_path):
    from harness.sweep.matrix import quant_config

    exp = load_experiment(write(tmp_path, """
models: [digits-resnet]
precisions: [int8]
quantization: {quantize_head: true, quantize_attention_matmul: true}
"""))
    cfg = quant_config(exp, expand(exp)[0])
    assert cfg.quantize_head and cfg.quantize_attention_matmul
    default = load_experiment(write(tmp_path, "models: [digits-resnet]\nprecisions: [int8]\n"))
    assert not quant_config(default, expand(default)[0]).quantize_head
