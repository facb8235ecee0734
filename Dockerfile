# Image for every tier of the service (web = Daphne, worker = Celery, flower).
#
#   docker compose build            # CPU torch for web/flower, CUDA torch for the worker (see compose)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t videoservice-gpu .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=videoservice.settings \
    MEDIA_ROOT=/data/media \
    BIND_ADDRESS=0.0.0.0
# BIND_ADDRESS=0.0.0.0 (what the CMD binds): the settings require SECRET_KEY, ALLOWED_HOSTS and
# authentication (docs/deploy.md, "Authentication")

# Which torch build to install: the CPU wheel by default, a CUDA one for GPU workers.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

WORKDIR /app

# curl only for health checks; PyAV's wheel bundles its own FFmpeg.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*

# runtime requirements only: no test or benchmark packages in the image
COPY requirements.txt requirements-nodeps.txt constraints.txt ./
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" \
 && pip install -r requirements.txt -c constraints.txt \
 && pip install --no-deps -r requirements-nodeps.txt -c constraints.txt

COPY . .

RUN mkdir -p /data/media /data/db \
 && useradd --system --uid 1000 --home /app app \
 && chown -R app /data /app
USER app

EXPOSE 8000 5555
CMD ["python", "-m", "videoservice.launch", "web"]
