"""The operations console at ``/ops``: HTML pages served by the gateway, signed in with an API key.

- :mod:`gateway.console.sessions`: the signed session cookie and the CSRF tokens;
- :mod:`gateway.console.entrypoint`: ``@page(...)`` routes (session, CSRF, HTML errors) and rendering;
- :mod:`gateway.console.routes`: the pages.
"""
