# syntax=docker/dockerfile:1
# The trainer image of examples/elasticjob.yaml: Python 3.11 and PyTorch from PyPI (the CUDA
# build: it trains on GPUs with NCCL and on CPUs with gloo) in a venv on PATH, nothing else.
# Any PyTorch image works with ElasticJob (pytorch/pytorch, NGC's, your own); this one is what the
# local cluster and the e2e tests run, built by tests/cluster/images.sh with buildah.
#
#   docker build -f images/pytorch.Dockerfile -t ghcr.io/elasticjob/pytorch:2.15.0 images
# PYTHON_IMAGE: any Debian-like image with python3 and its venv module (the local cluster uses
# a debootstrap'ed Debian bookworm, as it pulls nothing).

ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ARG TORCH_VERSION=2.15.0
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv && \
    /opt/venv/bin/pip install --disable-pip-version-check "torch==${TORCH_VERSION}" numpy && \
    /opt/venv/bin/python -c 'import torch, torch.distributed as d; assert d.is_gloo_available()'
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Any uid may run it (the example runs as 1000 under the restricted Pod Security Standard).
USER 1000:1000
WORKDIR /workspace
