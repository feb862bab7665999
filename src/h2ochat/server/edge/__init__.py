"""What every request passes before a handler sees it.

- ``guard``: the connection guard (request-head and body time limits, the connection cap);
- ``security``: forwarded headers, Host names, cross-site requests, security headers;
- ``http``: the app keys, refusals as JSON (``ApiError``), request bodies.
"""
