# One image for every joblock service: the worker (the entrypoint) and
# lockctl. docker-compose.yml builds it once and runs it three times.
FROM golang:1.24-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/lockctl ./cmd/lockctl

FROM debian:bookworm-slim
# The lock directory for the file engine exists owned by the unprivileged
# user, mode 0700, so a named volume mounted on it starts out the same.
RUN useradd --system --uid 10001 joblock \
 && install -d -o joblock -g joblock -m 0700 /var/lib/joblock/locks
COPY --from=build /out/worker /out/lockctl /usr/local/bin/
USER joblock
# JOBLOCK_IN_CONTAINER=1: the worker refuses the file engine in a lock
# directory no other container sees (replicas would not coordinate) unless
# JOBLOCK_LOCK_DIR names one; use JOBLOCK_ENGINE=redis, or a shared volume.
# HTTP listens on every interface of the container: publish it on
# 127.0.0.1 only, or behind something that authenticates.
ENV JOBLOCK_IN_CONTAINER=1 \
    JOBLOCK_HTTP=0.0.0.0:8080
EXPOSE 8080
# No curl in the image: the worker asks itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/worker", "-healthcheck"]
ENTRYPOINT ["/usr/local/bin/worker"]
