# Tally in a container: one image with the `tally` binary for the
# coordinator, the member nodes and the one-shot key set-up of
# docker-compose.yml. See docs/deployment.md.

# Build stage: the Rust toolchain. protox compiles the .proto files, so no
# protoc is needed; mimalloc needs the C compiler the image already has.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
# Every workspace member: the domain core and the wire crate (which compiles
# ../../proto in its build script), then the binary.
COPY crates crates
COPY src src
# Cargo.toml names these targets; cargo wants their files present.
COPY benches benches
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tally \
 && cp target/release/tally /usr/local/bin/tally

# Runtime stage: Debian slim, the binary, and an unprivileged user.
FROM debian:bookworm-slim
# The mount points exist in the image, owned by the tally user: Docker gives
# an empty named volume the ownership of the directory it is first mounted
# on, so the unprivileged processes can write their keys, stores and outbox.
RUN groupadd --system --gid 10001 tally \
 && useradd --system --uid 10001 --gid tally --no-create-home --shell /usr/sbin/nologin tally \
 && mkdir -p /data /keys /exports /config \
      /secret/coordinator /secret/RUS /secret/BLR /secret/ARM /secret/KAZ /secret/KGZ /secret/TJK \
 && chown -R tally:tally /data /keys /exports /secret
COPY --from=build /usr/local/bin/tally /usr/local/bin/tally
USER tally
ENTRYPOINT ["tally"]
CMD ["--help"]
