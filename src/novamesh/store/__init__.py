"""Config stores: the :class:`ConfigStore` protocol and its SQLite implementation."""

from .base import Change, ConfigStore, Revision, StoredObject
from .sqlite import SqliteStore

__all__ = ["Change", "ConfigStore", "Revision", "StoredObject", "SqliteStore"]
