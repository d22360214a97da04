# Builds the release binary and runs it.
#   docker build -t switchyard .
#   docker run -p 8080:8080 -e SWITCHYARD_JWT_SECRET=change-me -v switchyard-data:/data switchyard
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
COPY openapi.yaml ./openapi.yaml
# The browser client and the demo are compiled into the binary (src/http/assets.rs).
COPY clients/js/switchyard.js clients/js/switchyard.d.ts ./clients/js/
COPY clients/js/demo ./clients/js/demo
# The workspace lists the load generator; cargo needs its manifest to resolve.
# `fuzz/` is not needed: the workspace excludes it (a nightly-only workspace
# of its own), and a build from exactly these files was checked to succeed.
COPY bench ./bench
RUN cargo build --release --locked -p switchyard --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data switchyard \
 && mkdir -p /data && chown switchyard /data
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /data
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_DATABASE_URL=sqlite:///data/switchyard.db
VOLUME /data
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["serve"]
