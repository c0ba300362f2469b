"""From a trials table to the report: effects, fair selection, statistics, plots."""
