"""Selective, residual-aware Q/DQ insertion and calibration with pytorch-quantization.

Importing the package stays cheap (the sweep reads QuantConfig without torch): pytorch-quantization is imported
by the submodules that use it. Its import-time torch.jit.script call warns on recent torch, and it logs at
WARNING on every forward; both are silenced here, before any submodule loads it.
"""

import warnings

from absl import logging as _absl_logging

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
_absl_logging.set_verbosity(_absl_logging.ERROR)
