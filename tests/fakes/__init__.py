"""Test doubles of optional GPU libraries (tensorrt, pycuda, cuda-python), put in sys.modules by fake_gpu."""

# The CUDA bindings with a double here (torch.cuda runs on a real GPU only).
CUDA_BINDINGS = ["pycuda", "cuda-python"]
