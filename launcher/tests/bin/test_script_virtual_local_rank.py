"""Prints the worker's LOCAL_RANK and CUDA_VISIBLE_DEVICES (the GPU-free half of torch's test)."""
import os

print(f"LOCAL_RANK={os.environ['LOCAL_RANK']} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
