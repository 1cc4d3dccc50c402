# pgmux container image: a release build on Debian bookworm.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin pgmux

FROM debian:bookworm-slim
COPY --from=build /src/target/release/pgmux /usr/local/bin/pgmux
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/pgmux"]
CMD ["--config", "/etc/pgmux/pgmux.yaml"]
