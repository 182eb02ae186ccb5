-- MLflow's database next to Prefect's (POSTGRES_DB); MLflow creates its schema on first start.
CREATE DATABASE mlflow;
