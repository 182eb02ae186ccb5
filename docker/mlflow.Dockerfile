# The MLflow tracking server: Postgres backend store, artifacts proxied to MinIO. The same
# mlflow as the package's pin (pyproject.toml), so clients and server agree on the schema.
FROM python:3.11-slim
ENV MLFLOW_DISABLE_TELEMETRY=true PIP_NO_CACHE_DIR=1
RUN pip install --quiet "mlflow==3.17.2" "psycopg2-binary>=2.9" "boto3>=1.34"
