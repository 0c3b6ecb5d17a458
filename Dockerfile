# One image for every idmirror process; the compose file picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a copy of the source, then run from a data directory owned by the service user.
# Without the `embedded` extra: the image runs against the PostgreSQL and Redis the URLs name.
COPY . /src
RUN pip install /src/clients/python /src \
    && rm -rf /src \
    && useradd --system --create-home --uid 10001 idmirror \
    && mkdir -p /var/lib/idmirror \
    && chown idmirror /var/lib/idmirror

# IDMIRROR_HOME holds beat's schedule file (and, for `idmirror up`, the embedded services' data).
ENV IDMIRROR_HOME=/var/lib/idmirror
WORKDIR /var/lib/idmirror
USER idmirror

EXPOSE 8000 5555
CMD ["idmirror", "api"]
