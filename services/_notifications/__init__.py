"""The notifications service's own code.

Only services/notifications.py, migrations/notifications/ and tests import it.
"""
