"""Trials as plain PyTorch: the schema, networks, data, probes, theory and the training loop (no Ray, no MLflow)."""
