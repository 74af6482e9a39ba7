# KD service image: the API and the worker run from the same image (different commands, see
# docker-compose.yml). torch 2.14.1 / torchvision 0.29.1 from PyPI are CUDA-enabled builds on x86_64
# (they bundle the CUDA runtime; the host needs only the NVIDIA driver + container toolkit).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    KD_ARTIFACT_DIR=/data KD_HOST=0.0.0.0 KD_PORT=8000

# libgomp: OpenMP runtime of scikit-learn/onnxruntime wheels; curl: container health checks;
# g++: torch.compile (train.compile) builds C++ kernels on CPU and Triton launchers on CUDA.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The heavy, rarely changing layer first.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY kdcore ./kdcore
COPY kdservice ./kdservice
COPY api ./api
COPY worker ./worker
COPY kdcli ./kdcli
COPY migrations ./migrations
COPY alembic.ini ./
COPY scripts ./scripts
COPY examples ./examples
RUN pip install .

RUN useradd --create-home --uid 1000 kd && mkdir -p /data && chown kd /data
USER kd
VOLUME ["/data"]
EXPOSE 8000

# Default: the API (migrates the database and creates a local key on first start). The worker
# service overrides the command with `python -m worker`.
CMD ["python", "scripts/serve.py", "--api-only"]
