# syntax=docker/dockerfile:1
#
# The worker (entry point) and the publisher, as static binaries in a
# distroless image that runs as a non-root user:
#
#   docker build -t registry.example.com/breakwater/worker:1.0.0 .
#   docker run --rm registry.example.com/breakwater/worker:1.0.0 --help
#
# e2e/ops_test.go builds the binaries with the same flags and checks that they
# are static, and that this file keeps its stages, user and entry point.

# Build stage: the Go version of go.mod.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: no libc, so the binaries run on an image without one.
# -trimpath and no VCS stamp: the same source gives the same binary.
ENV CGO_ENABLED=0
RUN go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/publisher

# Run stage: distroless static has CA certificates, /etc/passwd with the
# nonroot user (65532) and tzdata, and no shell or package manager.
FROM gcr.io/distroless/static-debian12:nonroot AS run
COPY --from=build /out/worker /out/publisher /usr/local/bin/
USER 65532:65532
# Metrics, /healthz and /readyz when started with --http=:8080.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
