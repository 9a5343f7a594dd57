# The app image for compose.yaml: CPU-only torch, the core package, the Streamlit app.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/visual-anomaly

# Dependencies first, so code changes do not reinstall them. PyTorch's CPU index is searched too:
# its "+cpu" wheels win over PyPI's CUDA builds of the same version (gigabytes smaller), and the
# version bounds stay the ones in pyproject.toml.
COPY pyproject.toml README.md ./
RUN mkdir core && touch core/__init__.py \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && rm -rf core build
COPY core ./core
COPY api ./api
RUN pip install --no-deps .

COPY app ./app
COPY .streamlit ./.streamlit

# Named volumes mounted on /data and the model cache take these owners on first use.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data /home/app/.cache \
    && chown app /data /home/app/.cache
USER app

ENV DATA_DIR=/data
# 8501: the app; 8000: the HTTP API (its own service in compose.yaml); 9464: Prometheus metrics (METRICS_PORT), scraped inside the stack's network.
EXPOSE 8501 8000 9464

# Check every configured server first: an unreachable one is named (never its password) and the
# container exits, instead of the app failing later on its first page.
CMD ["sh", "-c", "visual-anomaly check && exec streamlit run app/Home.py --server.maxUploadSize=${MAX_UPLOAD_MB:-10} --server.port=8501 --server.address=0.0.0.0 --server.headless=true"]
