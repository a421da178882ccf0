FROM python:3.11-slim

# PYTHONPATH puts the source tree first, so alembic.ini and migrations/ sit next to the code
# that looks for them (`pip install .` copies only the packages).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --create-home --uid 10001 switchboard \
    && install -d -o switchboard /var/lib/switchboard /var/lib/switchboard/metrics

USER switchboard
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
