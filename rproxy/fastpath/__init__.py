"""Load the compiled fast path.

`rproxy._fastpath` is compiled against llhttp.h but not linked to any file:
its `llhttp_*` symbols are resolved from llhttp's own extension module, which
must therefore be loaded first with RTLD_GLOBAL.
"""
import os
import sys

_flags = sys.getdlopenflags()
sys.setdlopenflags(_flags | os.RTLD_GLOBAL)
try:
    import __llhttp  # noqa: F401  (provides the C symbols)
finally:
    sys.setdlopenflags(_flags)

from rproxy._fastpath import (  # noqa: E402
    Worker,
    check_posix_regex,
    set_malloc_trim_threshold,
    set_parent_death_signal,
    sizes,
)

__all__ = ["Worker", "check_posix_regex", "set_malloc_trim_threshold", "set_parent_death_signal", "sizes"]
