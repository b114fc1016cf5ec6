# One image for every service: `docker run transcode-energy <ingest|modeling|cost|qoe|exporter> ...`, plus a
# `qoe` target that adds an ffmpeg with libvmaf for the QoE worker:
#   docker build -t transcode-energy .                    # ingest, modeling, cost, exporter (default target)
#   docker build --target qoe -t transcode-energy-qoe .   # the QoE worker
#
# Why a separate target: Debian bookworm's ffmpeg is not built with libvmaf (bookworm has no libvmaf package),
# so VMAF needs another ffmpeg. The imageio-ffmpeg wheel from PyPI ships a static ffmpeg built with
# --enable-libvmaf, about 170 MB; only the QoE worker runs ffmpeg, so only its image carries it and the four
# other services keep the slim image.

# Build stage: the project's own wheel, built by the locked setuptools (no build isolation, nothing unpinned).
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements ./requirements
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/run.txt
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# Runtime: every dependency from the lock (exact versions, sha256 hashes), no compilers, a non-root user.
FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 --user-group te
COPY requirements/run.txt /tmp/run.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile --require-hashes --no-deps -r /tmp/run.txt \
 && pip install --no-cache-dir --no-compile --no-deps /wheels/*.whl && rm -rf /wheels /tmp/run.txt
# Ingest and the workers serve /metrics, /health and /ready on 8080 unless told otherwise, so the default
# HEALTHCHECK below always has a listener to probe; the exporter serves METRICS_PORT (9520). The probe
# (standard library only, ~13 MiB and ~0.1 s of CPU) reads the main process's command line and these
# variables to pick the port that service really serves.
ENV PYTHONUNBUFFERED=1 \
    STATUS_PORT=8080 \
    INGEST_STATUS_PORT=8080
USER te
WORKDIR /home/te
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["transcode-energy", "healthcheck"]
ENTRYPOINT ["transcode-energy"]
CMD ["--help"]

# The QoE worker: the runtime plus ffmpeg with libvmaf, found as `ffmpeg` on PATH (the worker's --ffmpeg
# default). The build fails here if that ffmpeg lacks the libvmaf filter.
FROM runtime AS qoe
USER root
COPY requirements/qoe.txt /tmp/qoe.txt
RUN pip install --no-cache-dir --no-compile --require-hashes --no-deps -r /tmp/qoe.txt && rm /tmp/qoe.txt \
 && ln -s "$(python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" /usr/local/bin/ffmpeg \
 && ffmpeg -hide_banner -filters | grep -q ' libvmaf '
USER te
CMD ["qoe"]

# The default target (a plain `docker build .`) is the slim runtime.
FROM runtime
