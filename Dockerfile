# One image for every splitlog component; the container's command picks one,
# e.g. `serve user_service` (see docker-compose.yml) or `up` for all in one.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# The data directory must exist in the image owned by splitlog: docker creates
# a missing volume mount point owned by root, which splitlog could not write.
RUN pip install . \
    && useradd --system --uid 10001 --user-group \
        --home-dir /var/lib/splitlog --create-home splitlog \
    && install --directory --owner splitlog --group splitlog /var/lib/splitlog/data

USER splitlog
WORKDIR /var/lib/splitlog

# Servers bind every interface inside the container; SQLite files (used when
# no database URL is set) go to the volume-friendly home directory.
ENV SPLITLOG_HOST=0.0.0.0 \
    SPLITLOG_DATA_DIR=/var/lib/splitlog/data

EXPOSE 50051 8080 50061 50062 50063 50064 50070 50071 50072 50073

ENTRYPOINT ["splitlog"]
CMD ["up"]
