# One image for every mensageria process; docker-compose.yml gives each
# container its own command (nameko run ..., python -m tools.migrate).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONWARNINGS=ignore::DeprecationWarning \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# dependencies first, so a code change does not reinstall them
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

RUN useradd --create-home --uid 10001 mensageria \
    && mkdir -p /app/data && chown mensageria:mensageria /app/data

COPY alembic.ini config.yaml ./
COPY bin/ bin/
COPY migrations/ migrations/
COPY services/ services/
COPY gateway/ gateway/
COPY tools/ tools/

USER mensageria

# harmless default: each compose service sets its own command
CMD ["nameko", "--help"]
