"""rproxy: a pre-fork HTTP reverse proxy with a Cython fast path."""
from ._version import __version__

__all__ = ["__version__"]
