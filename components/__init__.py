"""adrender pipeline steps: one module per step, each a typed `run(...)` over the artifact store."""
