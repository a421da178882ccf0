FROM python:3.11-slim

# PYTHONPATH puts the source tree first, so alembic.ini and migrations/ sit next to the code
# that looks for them (`pip install .` copies only the packages).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app
# The locked runtime dependencies, hash-checked, in a layer of their own (rebuilt only when the
# lock changes); then switchboard itself on top of them, with no other package. The embedded
# servers of the dev stack (the `embedded` extra) are not installed.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --require-hashes -r requirements/runtime.txt
COPY . .
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && useradd --create-home --uid 10001 switchboard \
    && install -d -o switchboard /var/lib/switchboard /var/lib/switchboard/metrics

USER switchboard
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
