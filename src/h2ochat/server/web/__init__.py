"""The web chat page: ``page`` serves the HTML and ``static/`` (plain ES modules, vendored libraries)."""
