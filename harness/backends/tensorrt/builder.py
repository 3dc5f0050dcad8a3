"""ONNX -> serialized TensorRT engine, written against the API that TensorRT 10.x and 11.x share.

Precision is what the ONNX says (FP16/BF16 casts, INT8/FP8 Q/DQ nodes): the network is strongly typed and no
precision flag is set, because 11.x removed those flags and 10.12 deprecated them. Strong typing is also what FP8
needs on 10.x (TensorRT 10.2 timed no FP8 tactic in a weakly typed network, TensorRT issue #3987). FP8 needs a GPU
of compute capability 8.9 or newer (Ada, Hopper, Blackwell), BF16 one of 8.0 or newer (Ampere on): checked before
the build, so an older GPU is one line, not a failed tactic search.
"""

from __future__ import annotations

from pathlib import Path

from harness.backends.base import BuildOptions
from harness.errors import HarnessError
from harness.fileio import atomic_write

TIMING_CACHE = "tensorrt-timing.cache"
# The oldest compute capability with tensor-core kernels for the type (FP8: sm_89 Ada; BF16: sm_80 Ampere).
MIN_CAPABILITY = {"fp8": (8, 9), "bf16": (8, 0)}


def check_gpu_supports(precision: str, device) -> None:
    """Refuse, in one line, a precision whose types the GPU has no kernels for; `device()` gives the GPU's name and
    compute capability (asked only for FP8 and BF16)."""
    from harness.backends.base import float_type, quantized_type

    kinds = [k for k in (quantized_type(precision), float_type(precision)) if k in MIN_CAPABILITY]
    if not kinds:
        return
    gpu = device()
    cc = gpu.get("compute_capability", "")
    try:
        have = tuple(int(part) for part in cc.split("."))
    except ValueError:
        return  # unknown: TensorRT decides
    for kind in kinds:
        need = MIN_CAPABILITY[kind]
        if have < need:
            raise HarnessError(f"--precision {precision} needs {kind.upper()} kernels, which a GPU of compute "
                               f"capability {'.'.join(map(str, need))} or newer has; {gpu.get('gpu', 'this GPU')} "
                               f"is {cc}: use {'int8' if kind == 'fp8' else 'fp16'} there")


def network_flags(trt) -> int:
    """Strong typing, looked up by name: the flag's value is 1 in 10.x and 0 in 11.x (where it is implied)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def make_builder(trt, logger):
    """The builder times tactics on the GPU, so without a usable GPU this is where TensorRT gives up."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind raises TypeError/RuntimeError when createInferBuilder returns null
        raise HarnessError(f"TensorRT cannot create a builder ({exc}): building an engine needs a CUDA GPU "
                           "and driver; run build-engine --backend tensorrt on the GPU machine") from exc
    return builder


def parse_onnx(trt, builder, logger, onnx_path: Path):
    """A strongly typed network from the ONNX; a parse failure names the ONNX node and the parser's reason."""
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        if not errors:
            raise HarnessError(f"{onnx_path}: TensorRT's ONNX parser failed without a reason; "
                               "check the file with onnx.checker")
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise HarnessError(f"{onnx_path.name}: TensorRT cannot parse node '{first.node_name()}' "
                           f"({first.node_operator()}): {first.desc()}{more}")
    return network, parser


def profile_shapes(network, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per input: the batch axis from the options, every other axis fixed by the ONNX."""
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise HarnessError(f"input {tensor.name!r} has dynamic dimensions {dims} besides the batch axis; "
                               "export with a fixed --input-shape")
        shapes[tensor.name] = tuple((b, *dims[1:]) for b in (options.batch_min, options.batch_opt,
                                                             options.batch_max))
    return shapes


def _timing_cache(config, path: Path):
    """Load the shared timing cache; one from another TensorRT version or GPU is replaced, not fatal."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def mark_debug(network, names) -> list[str]:
    """Mark the layer outputs named `names` as debug tensors (TensorRT >= 10): readable at run time through an
    IDebugListener without becoming engine outputs, so the engine's I/O stays as built. Returns those found."""
    wanted, marked = set(names), []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            if tensor.name in wanted and tensor.name not in marked and network.mark_debug(tensor):
                marked.append(tensor.name)
    return marked


def build_serialized(trt, onnx_path: Path, options: BuildOptions, timing_cache: Path, debug_tensors=()) -> bytes:
    """Parse, configure (profile, workspace, optimization level, DETAILED verbosity, timing cache), build;
    `debug_tensors` names intermediate tensors to mark as debug tensors."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = make_builder(trt, logger)
    network, _parser = parse_onnx(trt, builder, logger, Path(onnx_path))
    if debug_tensors:
        mark_debug(network, debug_tensors)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.builder_optimization_level = options.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(network, options).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    _timing_cache(config, timing_cache)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise HarnessError(f"TensorRT could not build an engine from {Path(onnx_path).name}; its log above "
                           "names the layer (try a larger --workspace-mb or a lower --opt-level)")
    atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)
