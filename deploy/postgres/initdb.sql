-- Run once, on the first start of the compose PostgreSQL (empty data volume).
-- MLflow and the gateway each get their own database: both keep an alembic_version table.
CREATE DATABASE mlflow OWNER gateway;
