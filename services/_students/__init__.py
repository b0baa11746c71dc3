"""The students service's own code.

Only services/students.py, migrations/students/ and tests import it.
"""
