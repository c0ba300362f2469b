"""Moved to `vgtune.tracking.writer_process`; the old path warns and will be removed (vgtune._compat)."""

from vgtune._compat import forward

forward(__name__, __spec__)
