"""Configuration: grammar (syntax), directives (semantics), model (the result)."""
from .errors import ConfigError, ConfigErrors
from .loader import load, loads
from .model import Config

__all__ = ["Config", "ConfigError", "ConfigErrors", "load", "loads"]
