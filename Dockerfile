# Image for compose.yaml: the web service, the scheduler and the one-shot migration all run this image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY booking ./booking
COPY instruments ./instruments
COPY scheduling ./scheduling
COPY templates ./templates
COPY static ./static
COPY alembic ./alembic
RUN pip install . && useradd --system --uid 10001 booking
USER booking
EXPOSE 8000
CMD ["booking", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
