# Builds the worker and lockctl; the runtime image holds nothing else.
FROM golang:1.24-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/lockctl ./cmd/lockctl

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 joblock
COPY --from=build /out/worker /out/lockctl /usr/local/bin/
USER joblock
ENV JOBLOCK_HTTP=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
