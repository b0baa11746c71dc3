"""The certificates service's own code.

Only services/certificates.py, migrations/certificates/ and tests import it.
"""
