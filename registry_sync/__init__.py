"""registry-gateway's control plane: reading the MLflow registry and its artifacts."""
