# wrenmq in a container: the compiled wheel is built in a builder stage (with a C compiler), and the
# runtime image holds only Python and that wheel, run by a non-root user.
#
#   docker build -t wrenmq .
#   docker run -p 1883:1883 -p 9001:9001 -p 8080:8080 -v wrenmq-data:/var/lib/wrenmq wrenmq
#
# Settings: mount a config file and set WRENMQ_CONFIG (compose.yaml does), or set WRENMQ_* variables.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Build from the sdist, as a packager would: the wheel must not depend on files the sdist leaves out.
# The build fails here, not at run time, if the hot path did not compile (setup.py would fall back).
RUN pip install --no-cache-dir build \
    && python -m build --outdir /dist . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/dist/*.whl')[0]).namelist(); sys.exit(0 if any(n.endswith('.so') for n in names) else 'the wheel has no compiled modules')"

FROM python:${PYTHON_VERSION}-slim
COPY --from=builder /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl \
    && rm /tmp/*.whl \
    && useradd --system --uid 1883 --user-group --home-dir /var/lib/wrenmq --shell /usr/sbin/nologin wrenmq \
    && mkdir -p /var/lib/wrenmq /etc/wrenmq \
    && chown wrenmq:wrenmq /var/lib/wrenmq
# Listen on every interface of the container; with no allow_anonymous setting, clients must then log in.
ENV WRENMQ_HOST=0.0.0.0 \
    WRENMQ_API_HOST=0.0.0.0 \
    WRENMQ_DATA_DIR=/var/lib/wrenmq \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/wrenmq"]
# MQTT, MQTT over TLS (once tls_port, certfile and keyfile are set), MQTT over WebSocket, HTTP API and console.
EXPOSE 1883 8883 9001 8080
USER wrenmq
WORKDIR /var/lib/wrenmq
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["wrenmq", "ctl", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["wrenmq"]
CMD ["serve"]
