"""Selective, residual-aware Q/DQ insertion and calibration with pytorch-quantization."""

import warnings

from absl import logging as _absl_logging

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # its import-time torch.jit.script warns on recent torch
    import pytorch_quantization.tensor_quant  # noqa: F401

_absl_logging.set_verbosity(_absl_logging.ERROR)  # pytorch-quantization logs at WARNING on every forward
