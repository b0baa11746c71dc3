"""The status service's own code.

Only services/status.py, migrations/status/ and tests import it.
"""
