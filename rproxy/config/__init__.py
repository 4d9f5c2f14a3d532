"""Configuration: grammar (syntax), directives (semantics), model (the result).

`load` and `loads` (and with them the grammar, Lark and the directive
table) are imported on first use only: a running master never imports
them (it parses in a short-lived child, see isolated.py), so importing
`rproxy.config.model` must not pull them in."""
from .errors import ConfigError, ConfigErrors
from .model import Config

__all__ = ["Config", "ConfigError", "ConfigErrors", "load", "loads"]


def __getattr__(name):
    if name in ("load", "loads"):
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
