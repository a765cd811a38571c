# stoker's container image: built from source in a Rust image, run as a
# non-root user (65532) on a slim Debian base with nothing else added.
#
#   podman build -t stoker:0.1.0 .        (or docker build)
#   podman run --rm stoker:0.1.0 --version
#
# Another base (e.g. gcr.io/distroless/cc-debian12:nonroot) works too: the
# binary needs glibc, libgcc_s and CA certificates, which it brings along.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# No debug info in the image's binary (126 MB -> ~30 MB); panics still
# name their function.
ENV CARGO_PROFILE_RELEASE_DEBUG=none
RUN cargo build --release --locked --bin stoker \
 && mkdir -p /out \
 && cp target/release/stoker /out/stoker

FROM ${BASE_IMAGE} AS runtime
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/stoker /usr/local/bin/stoker
# The Unix socket's directory; mount a volume here (emptyDir, hostPath).
# The root filesystem can be read-only: stoker writes nothing else.
USER 65532:65532
ENV STOKER_SOCKET=/run/stoker/stoker.sock
EXPOSE 7070 9464
ENTRYPOINT ["/usr/local/bin/stoker"]
CMD ["serve"]
