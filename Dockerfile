# CareMesh: one image with every executable (router, identity, dispatch, alerts, messaging,
# caremesh); docker-compose.yml picks the command. Build: docker build -t caremesh:local .
ARG SWIFT_IMAGE=swift:6.3-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends libzmq3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits reuse the resolved packages.
COPY Package.swift ./
RUN swift package resolve
COPY Shared Shared
COPY Services Services
COPY Tests Tests
COPY proto proto
RUN swift build -c release --static-swift-stdlib \
    --product router --product identity --product dispatch --product alerts --product messaging --product sandbox --product caremesh \
 && bin="$(swift build -c release --show-bin-path)" && mkdir /out \
 && cp "$bin/router" "$bin/identity" "$bin/dispatch" "$bin/alerts" "$bin/messaging" "$bin/sandbox" "$bin/caremesh" /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libzmq5 ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home caremesh
COPY --from=build /out/ /usr/local/bin/
USER caremesh
# Containers talk across their network: bind the router on every interface.
ENV CAREMESH_ROUTER_CLIENT_ENDPOINT=tcp://0.0.0.0:5555 \
    CAREMESH_ROUTER_WORKER_ENDPOINT=tcp://0.0.0.0:5556 \
    CAREMESH_HTTP_ADDRESS=0.0.0.0:8080
EXPOSE 5555 5556 8080
CMD ["router"]
