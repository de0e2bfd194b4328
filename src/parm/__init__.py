"""parm: parity models for erasure-coded resilience in ML prediction serving."""

__version__ = "0.1.0"
# The distribution's name on PyPI (pip install / extras); the import name is `parm`.
DISTRIBUTION = "parity-models"
