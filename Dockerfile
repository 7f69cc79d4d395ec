# Caravan: build the binary, then ship it alone in a slim image.
#   docker build -t caravan .
#   docker run -p 11434:11434 -v caravan-models:/models caravan
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The kernels pick AVX-512, AVX2 or the portable path when they start, so
# one image serves every x86-64 machine.
RUN cargo build --release --locked --bin caravan && strip target/release/caravan

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/caravan caravan \
    && mkdir -p /models /data && chown caravan:caravan /models /data
COPY --from=build /src/target/release/caravan /usr/local/bin/caravan
USER 10001
# Models on a volume (pulled there on first start), batch jobs' state beside.
ENV CARAVAN_HOST=0.0.0.0:11434 CARAVAN_MODELS=/models CARAVAN_DATA=/data
VOLUME ["/models", "/data"]
EXPOSE 11434 5557
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s CMD curl -fsS http://127.0.0.1:11434/health || exit 1
ENTRYPOINT ["caravan"]
CMD ["serve"]
