"""The app's response class: Flask's, sending a Location that is already a URI as it is."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import flask

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from werkzeug.datastructures import Headers

# What werkzeug's iri_to_uri gives back unchanged: http(s), a lower-case host name or IPv4
# address, a port of up to four digits without leading zeros, a path and a non-empty query of
# characters it leaves unquoted, no fragment. The URLs the API links to are of this kind.
URI = re.compile(
    r"https?://[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*(?::[1-9][0-9]{0,3})?"
    r"/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*(?:\?[A-Za-z0-9._~!$&'()*+,;=:@/?%-]+)?"
)


class Response(flask.Response):
    """Flask's Response; a Location already in URI form skips werkzeug's IRI conversion."""

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        """Return the headers to send: werkzeug's, with a Location that is a URI left as it is.

        werkzeug converts every Location from an IRI (urlsplit, quoting, IDNA). For the status
        URL /enqueue answers with, new for every job and so never in urlsplit's cache, that
        was a fourteenth of the route's work, to return the URL unchanged.
        """
        location = self.headers.get("Location")
        if location is None or not URI.fullmatch(location):
            return super().get_wsgi_headers(environ)
        del self.headers["Location"]
        try:
            headers = super().get_wsgi_headers(environ)
        finally:
            self.headers["Location"] = location
        headers["Location"] = location
        return headers
