"""parm's built-in coders. They register through the same ``parm.encoders`` / ``parm.decoders``
entry points a third-party plugin uses (see parm's pyproject.toml)."""
