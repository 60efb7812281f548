"""For operators: liveness (``/healthz``), readiness (``/readyz``: the database answers) and the
Prometheus metrics (``/metrics``).

Metrics tell how the service is used, so ``/metrics`` asks for its own bearer token,
``METRICS_TOKEN``; without one configured it answers 401 to everyone.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from cryptofiles.accounts import InvalidToken
from cryptofiles.web.context import current_services
from cryptofiles.web.metrics import MEDIA_TYPE, current_metrics
from cryptofiles.web.responses import reply

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return reply("ok", json={"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    current_services().storage.ping()  # DatabaseUnavailable becomes 503
    return reply("ready", json={"status": "ready"})


@bp.get("/metrics")
def metrics_view() -> Response:
    metrics_token = current_services().settings.metrics_token
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if (
        not metrics_token
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(offered.strip().encode(), metrics_token.encode())
    ):
        raise InvalidToken("A valid metrics token is missing.")
    return Response(current_metrics().render(), mimetype=MEDIA_TYPE)
