# syntax=docker/dockerfile:1
# Build:  docker build -t modegate .
# Run:    docker run --rm -p 8080:8080 -p 9090:9090 -v "$PWD/my.toml:/etc/modegate/modegate.toml:ro" modegate
# Demo:   docker run --rm -p 8080:8080 -p 9090:9090 modegate demo --listen 0.0.0.0:8080 --admin-listen 0.0.0.0:9090

# A static (musl) build: the runtime image needs no libc.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# The demo's config and seed are compiled in (include_str!).
COPY config ./config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/modegate

# Runtime: the binary, CA roots and the shipped configs; nothing else (no shell, no package
# manager). TLS roots are also compiled in (webpki-roots); the bundle serves tools that read it.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/modegate /usr/local/bin/modegate
COPY config/ /etc/modegate/
ENV MODEGATE_CONFIG=/etc/modegate/modegate.toml
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/modegate"]
CMD ["serve"]
