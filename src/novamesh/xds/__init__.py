"""xDS: translation cache, debounce and the ADS server."""

from .cache import TranslationCache
from .debounce import Debouncer
from .server import XdsServer

__all__ = ["TranslationCache", "Debouncer", "XdsServer"]
