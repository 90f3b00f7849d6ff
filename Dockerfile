# syntax=docker/dockerfile:1
# One image for both programs: wsfleet-operator and wsfleet-gateway, static, run as uid 65532.
# The default command is the gateway (what gateway pods run); the Helm chart starts the
# operator with command /usr/local/bin/wsfleet-operator.
# Without a container engine, scripts/build-image produces the same image as an OCI archive.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# glibc's crt-static gives self-contained binaries; the target is named explicitly so that
# build scripts and proc macros stay dynamically linked on the build host.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" -p wsfleet-operator -p wsfleet-gateway \
 && install -D -m 0755 "target/$target/release/wsfleet-operator" /out/usr/local/bin/wsfleet-operator \
 && install -D -m 0755 "target/$target/release/wsfleet-gateway" /out/usr/local/bin/wsfleet-gateway

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/wsfleet-gateway"]
