"""Coding contracts: the code spec, encoder/decoder base classes, the plugin registry and factory."""

from parm.coding.base import Code, Decoder, Encoder
from parm.coding.erasure import erasure_patterns, random_erasures, sample_erasures
from parm.coding.factory import build_code
from parm.coding.registry import PluginError, PluginImportError, decoders, encoders
from parm.coding.spec import CodeSpec

__all__ = [
    "Code",
    "CodeSpec",
    "Decoder",
    "Encoder",
    "PluginError",
    "PluginImportError",
    "build_code",
    "decoders",
    "encoders",
    "erasure_patterns",
    "random_erasures",
    "sample_erasures",
]
