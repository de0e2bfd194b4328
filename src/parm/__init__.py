"""parm: parity models for erasure-coded resilience in ML prediction serving."""

__version__ = "0.1.0"
