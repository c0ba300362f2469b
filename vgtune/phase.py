"""Moved to `vgtune.analysis.phase`; the old path warns and will be removed (vgtune._compat)."""

from vgtune._compat import forward

forward(__name__, __spec__)
