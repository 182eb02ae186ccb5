# CPU worker: runs the flows of the `cpu` pool (process worker) and the one-shot `iea deploy`.
FROM python:3.11-slim
ENV DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY docker docker
COPY iea iea
COPY flows flows
COPY expectations expectations
COPY configs configs
RUN EXTRAS=worker sh docker/install.sh
CMD ["prefect", "worker", "start", "--pool", "cpu", "--type", "process"]
