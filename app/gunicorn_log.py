"""gunicorn's error and access logs in the app's log format (app.log).

Apart from app.log so that only gunicorn imports gunicorn: RQ workers log through app.log too.
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from app.config import build_config
from app.log import REQUEST_ID_ENVIRON, prepare_handler


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logs in the app's format; each access line carries its request's id.

    `logger_class = "app.gunicorn_log.GunicornLogger"` in gunicorn.conf.py. In JSON, an access line also
    has the request's fields (method, path, status, bytes, duration_ms, remote_addr, user_agent).
    """

    def setup(self, cfg: Any) -> None:
        """Set up gunicorn's handlers, then give them the app's format."""
        super().setup(cfg)
        log_format = build_config()["LOG_FORMAT"]
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                prepare_handler(handler, log_format)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """Log one request, with its id, as gunicorn's access_log_format has it."""
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        request_id = environ.get(REQUEST_ID_ENVIRON) or atoms.get("{x-request-id}o") or "-"
        fields = {
            "request_id": request_id,
            "remote_addr": atoms["h"],
            "method": atoms["m"],
            "path": atoms["U"],
            "query": atoms["q"] or "",
            "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
            "bytes": atoms["B"],
            "duration_ms": atoms["M"],
            "user_agent": atoms["a"],
        }
        try:
            self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms), extra=fields)
        except Exception:
            # As gunicorn's own access(): a line that cannot be written must not fail the request.
            self.error("Could not write an access log line", exc_info=True)
