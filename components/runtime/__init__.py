"""The services a step needs: campaign spec, object store, model registry, telemetry, media, tensors."""
