"""From a spec to Ray Tune: parse and expand the spec, run the trials, stop, show progress."""
