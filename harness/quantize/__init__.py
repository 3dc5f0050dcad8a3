"""Selective, residual-aware Q/DQ insertion and calibration with pytorch-quantization.

Importing the package stays cheap (the sweep reads QuantConfig without torch): pytorch-quantization is imported
by the submodules that use it. Its import-time torch.jit.script call warns on recent torch, and it logs at
WARNING on every forward; both are silenced here, before any submodule loads it.
"""

import warnings

from absl import logging as _absl_logging

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
_absl_logging.set_verbosity(_absl_logging.ERROR)


def __getattr__(name: str):
    """`harness.quantize.register_block` (and the helpers its converters use) without importing torch up front."""
    if name in ("register_block", "quantize_layers"):
        from harness.quantize import blocks

        return getattr(blocks, name)
    if name == "activation_quantizer":
        from harness.quantize.modules import activation_quantizer

        return activation_quantizer
    raise AttributeError(f"module 'harness.quantize' has no attribute {name!r}")
