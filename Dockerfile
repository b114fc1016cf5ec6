# One image for every service: `docker run transcode-energy <ingest|modeling|cost|qoe|exporter> ...`.
# Build stage: resolve and build wheels (numpy, scipy and msgspec come as manylinux wheels).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: no compilers, no build tools, a non-root user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group te
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
USER te
WORKDIR /home/te
ENV PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:8080/health
# Each service serves /health on its status port (8080 in docker-compose.yml; the gateway on 9520).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["transcode-energy", "healthcheck"]
ENTRYPOINT ["transcode-energy"]
CMD ["--help"]
