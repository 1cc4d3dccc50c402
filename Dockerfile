# pgmux container image: a release build on Debian bookworm.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgmux

FROM debian:bookworm-slim
# A fixed numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER
# (deploy/kubernetes runs the pods as 65532 too; scripts/check-deploy compares them).
RUN groupadd --system --gid 65532 pgmux \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pgmux
COPY --from=build /src/target/release/pgmux /usr/local/bin/pgmux
USER 65532:65532
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/pgmux"]
CMD ["--config", "/etc/pgmux/pgmux.yaml"]
