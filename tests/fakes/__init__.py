"""Test doubles of optional GPU libraries (tensorrt, pycuda), injected into sys.modules by the fake_gpu fixture."""
