# Builds a static binary of one command into an empty image:
#   docker build --build-arg CMD=manager -t manager .
#   docker build --build-arg CMD=glance-shim -t glance-shim .
FROM golang:1.26 AS build
ARG CMD=manager
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/app ./cmd/${CMD}

FROM scratch
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
