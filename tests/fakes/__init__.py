"""Test doubles of optional GPU libraries (tensorrt, pycuda, cuda-python, torch.cuda), put in place by fake_gpu."""

# The CUDA bindings with a double here (each provider of harness.cuda).
CUDA_BINDINGS = ["pycuda", "cuda-python", "torch"]
