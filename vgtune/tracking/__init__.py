"""MLflow: writing a sweep's runs (logger, writer_process) and reading them back (reader)."""


def __getattr__(name: str):
    """The names of the old module `vgtune.tracking` (`MLflowTracker`, `flush_all`, now in
    vgtune.driver.mlflow_callback), with a FutureWarning naming their new path; imported only when asked for."""
    from vgtune._compat import forward_attribute

    return forward_attribute(__name__, name)
