"""Moved to `vgtune.driver.runner`; the old path warns and will be removed (vgtune._compat)."""

from vgtune import api
from vgtune._compat import forward

forward(__name__, __spec__, call=api.sweep)  # `vgtune.sweep(...)` stays the API function
