"""Operator tools for mensageria (``tools.shell``: helpers for ``nameko shell``)."""
