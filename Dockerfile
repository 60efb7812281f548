# The API server of the docker compose demo (docker-compose.yml): the package and its pinned
# dependencies, served by gunicorn as cryptofiles/dev/serve.py runs it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY cryptofiles ./cryptofiles
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app

# Run from an empty directory, so that the installed package is what gets imported.
WORKDIR /app
USER app
EXPOSE 5000

# cryptofiles/dev/serve.py's gunicorn_command, bound to all interfaces; WEB_WORKERS, WEB_CONNECTIONS,
# HEADER_TIMEOUT_SECONDS and LOG_LEVEL work as in the rest of the configuration.
# tests/test_compose.py keeps the two equal. serve.py explains each option: gevent workers for slow
# clients, --header-map dangerous with the pre_request filter of cryptofiles/gunicorn_conf.py for the
# seed's underscore headers.
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/cryptofiles-metrics
CMD ["sh", "-c", "exec python -m gevent.monkey --module gunicorn --bind 0.0.0.0:5000 --worker-class gevent --workers ${WEB_WORKERS:-2} --worker-connections ${WEB_CONNECTIONS:-1000} --keep-alive ${HEADER_TIMEOUT_SECONDS:-10} --header-map dangerous --timeout 120 --graceful-timeout 30 --no-control-socket --config python:cryptofiles.gunicorn_conf --log-level ${LOG_LEVEL:-info} 'cryptofiles.web:create_app()'"]
