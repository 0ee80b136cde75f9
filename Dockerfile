# syntax=docker/dockerfile:1
# The same images as `just images` (scripts/images), for those who build with Docker or BuildKit:
#   docker build --target agent   -t docker.io/healthbridge/agent:0.1.0 .
#   docker build --target webhook -t docker.io/healthbridge/webhook:0.1.0 .
#   docker build --target demo    -t docker.io/healthbridge/demo:0.1.0 .
#   docker build --target pause   -t docker.io/healthbridge/pause:local .
# Static musl binaries, FROM scratch, uid/gid 65532, no shell; TLS roots are compiled in (webpki-roots).

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml names the channel and the musl target; rustup installs both on first use.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --target x86_64-unknown-linux-musl \
        -p healthbridge-agent -p healthbridge-webhook -p healthbridge-demo \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/healthbridge-agent \
          target/x86_64-unknown-linux-musl/release/healthbridge-webhook \
          target/x86_64-unknown-linux-musl/release/healthbridge-demo /out/ \
    && musl-gcc -static -Os -Wall -Wextra -Werror -o /out/pause images/pause/pause.c \
    && strip /out/pause

FROM scratch AS agent
COPY --from=build --chmod=0555 /out/healthbridge-agent /usr/local/bin/healthbridge-agent
ENV PATH=/usr/local/bin
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/healthbridge-agent"]

FROM scratch AS webhook
COPY --from=build --chmod=0555 /out/healthbridge-webhook /usr/local/bin/healthbridge-webhook
ENV PATH=/usr/local/bin
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/healthbridge-webhook"]

FROM scratch AS demo
COPY --from=build --chmod=0555 /out/healthbridge-demo /usr/local/bin/healthbridge-demo
ENV PATH=/usr/local/bin
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/healthbridge-demo"]

FROM scratch AS pause
COPY --from=build --chmod=0555 /out/pause /pause
ENV PATH=/usr/local/bin
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/pause"]
