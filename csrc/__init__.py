"""CUDA C++ sources (shipped as package data, built on demand by fedcore.kernels.quant_pack_cuda)."""
