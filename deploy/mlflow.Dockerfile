# The MLflow tracking server of deploy/compose.yaml: PostgreSQL backend, S3 artifacts
# (boto3), nothing else. Build context: deploy/ (nothing is copied from it).
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install mlflow==3.17.2 boto3 psycopg2-binary \
    && groupadd --system --gid 10002 mlflow \
    && useradd --system --uid 10002 --gid 10002 --create-home mlflow

USER 10002:10002
WORKDIR /home/mlflow
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
