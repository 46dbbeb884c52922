"""The playground page: plain HTML, CSS and JS from this package, served on the KServe port.

``GET /`` and ``/playground`` give the page; it asks ``/playground/models`` (served models, their
readiness and the UIE card's example schema) and the KServe infer route, nothing else, and loads
nothing from elsewhere (the answers carry a Content-Security-Policy of ``'self'``). Off with
``ie.playground: false``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground": ("index.html", "text/html; charset=utf-8"),
    "/playground/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
}
MODELS_PATH = "/playground/models"
HEADERS = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


@cache
def asset(path: str) -> tuple[bytes, str]:
    """The bytes and content type of the page file at URL ``path`` (KeyError if none)."""
    name, content_type = ASSETS[path]
    return resources.files(__package__).joinpath(name).read_bytes(), content_type
