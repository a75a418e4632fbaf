"""Pure translation from a MeshSnapshot to Envoy resources. No I/O, no clock, no asyncio."""

from .clusters import TranslateOptions
from .common import SHORT_NAMES, XDS_ORDER, T
from .proxy import ClassKey, Resources, class_key, consistency_errors, translate_class, translate_proxy

__all__ = [
    "TranslateOptions",
    "T",
    "XDS_ORDER",
    "SHORT_NAMES",
    "ClassKey",
    "Resources",
    "class_key",
    "consistency_errors",
    "translate_class",
    "translate_proxy",
]
