# GPU image: what the `gpu` pool's containers run (one NVIDIA device each, the pool's device
# request in docker/gpu-pool-template.json). The registry's torch wheels carry their CUDA
# libraries; the base image brings the driver interface. The docker worker that starts these
# containers runs the worker-cpu image with prefect-docker (compose service worker-gpu).
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
ENV DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY docker docker
COPY iea iea
COPY flows flows
COPY expectations expectations
COPY configs configs
RUN PIP=/opt/venv/bin/pip EXTRAS=worker sh docker/install.sh
