# syntax=docker/dockerfile:1
# Build: docker build -t modegate .
# Run:   docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/config:/etc/modegate:ro modegate
#        (serves with /etc/modegate/modegate.toml; override with MODEGATE_CONFIG)

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Cache dependencies separately from the sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/modegate

# Runtime: the binary and its config; TLS roots are compiled in (webpki-roots), so no CA bundle
# or shell is needed. distroless/static has no libc, so use cc (glibc) to match the build.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/modegate /usr/local/bin/modegate
COPY config/ /etc/modegate/
ENV MODEGATE_CONFIG=/etc/modegate/modegate.toml
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/modegate"]
CMD ["serve"]
