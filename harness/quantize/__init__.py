"""Selective, residual-aware Q/DQ insertion and calibration with pytorch-quantization."""
