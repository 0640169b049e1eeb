"""adrender pipelines: the KFP definition, the local runner and the `adrender` command line."""
