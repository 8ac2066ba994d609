# dstack-vpc-nginx: one image for every role; the role comes from the
# environment (scripts/entrypoint.sh, README "The image").  Thin over the
# Makefile: the build stage runs the same targets as `make test`, the
# runtime stage gets `make install`'s tree and only runtime packages.

FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN ./scripts/deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make all && make install DESTDIR=/out PREFIX=/usr/local


FROM debian:bookworm-slim AS runtime
COPY scripts/deps.sh /tmp/deps.sh
RUN /tmp/deps.sh runtime \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /tmp/deps.sh \
    && useradd --system --no-create-home --shell /usr/sbin/nologin dstack-vpc
COPY --from=build /out/ /

# nginx workers and redis-server run as dstack-vpc; supervisord, the nginx
# master (binds :80/:443, reads the key) and wgctl (CAP_NET_ADMIN) as root
ENV DSTACK_VPC_USER=dstack-vpc \
    DSTACK_VPC_SHARE=/usr/local/lib/dstack-vpc \
    MESH_BACKEND=127.0.0.1:8000

EXPOSE 80 443 41641/udp
VOLUME ["/var/lib/dstack-vpc"]

HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["/usr/local/lib/dstack-vpc/scripts/entrypoint.sh", "health"]

ENTRYPOINT ["/usr/local/lib/dstack-vpc/scripts/entrypoint.sh"]
CMD ["run"]
