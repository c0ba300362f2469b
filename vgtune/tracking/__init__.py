"""MLflow: writing a sweep's runs (logger, writer_process) and reading them back (reader)."""
