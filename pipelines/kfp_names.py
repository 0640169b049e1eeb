"""The names of the cluster objects every task of the render pipeline reads, with their defaults.

The Helm chart creates (or names) these objects and compiles the pipeline with its own names
(``adrender compile --settings-config-map --s3-secret --mlflow-secret --model-cache-pvc``); the kustomize base
uses the defaults. Kept apart from ``pipelines.render_campaign`` so the CLI reads them without importing KFP.
"""

from __future__ import annotations

__all__ = [
    "MLFLOW_SECRET",
    "MLFLOW_SECRET_KEYS",
    "MODEL_CACHE_PVC",
    "S3_SECRET",
    "S3_SECRET_KEYS",
    "SETTINGS_CONFIG_MAP",
    "SETTINGS_KEYS",
]

# cluster settings (store, S3 endpoint, MLflow URI, Pushgateway) as env, from a ConfigMap the chart installs
SETTINGS_CONFIG_MAP = "adrender-settings"
SETTINGS_KEYS = (
    "ADRENDER_STORE",
    "ADRENDER_S3_ENDPOINT",
    "ADRENDER_S3_REGION",
    "MLFLOW_TRACKING_URI",
    "ADRENDER_PUSHGATEWAY",
    "ADRENDER_REWRITE_BACKEND",
    "ADRENDER_REWRITE_URL",
    "ADRENDER_REWRITE_MODEL",
)
# credentials come from Secrets as env, never as parameters: Secret key -> env name
S3_SECRET = "adrender-s3"
S3_SECRET_KEYS = {"access-key": "ADRENDER_S3_ACCESS_KEY", "secret-key": "ADRENDER_S3_SECRET_KEY"}
MLFLOW_SECRET = "adrender-mlflow"
MLFLOW_SECRET_KEYS = {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
# the checkpoint cache the model steps mount
MODEL_CACHE_PVC = "adrender-model-cache"
