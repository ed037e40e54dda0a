# pgleap itself as an image: for CI (with the host's Docker socket) and as an in-cluster Job
# (with the Role of manifests/rbac.yaml and in-cluster credentials).
#   pgleap images build              builds it (as pgleap/pgleap:<version>) from a wheelhouse
#   docker run --rm --user 0 -v /var/run/docker.sock:/var/run/docker.sock -v /tmp:/tmp \
#     -v "$PWD:/work" pgleap/pgleap:0.1.0 \
#     rehearse dump /work/app.dump --from postgis/postgis:13-3.4 --to postgis/postgis:17-3.5
# (docs/ci.md says why: root for the socket and the temporary servers' socket directories,
# the host's /tmp because helper containers bind-mount what pgleap writes there)
# The context is a folder holding this file and wheels/ (pgleap's wheel and its dependencies'),
# so the build needs no index. BASE may be any Debian-based image with python3 (e.g. a
# python:3.12-slim where a registry is reachable); the default is the Debian release the
# test images are built on.
ARG BASE=debian:bookworm
FROM ${BASE}

RUN set -eux; \
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd -r -g 10001 pgleap; \
    useradd -r -u 10001 -g pgleap -d /home/pgleap -m -s /usr/sbin/nologin pgleap

COPY wheels/ /tmp/wheels/
RUN set -eux; \
    python3 -m venv /opt/pgleap; \
    /opt/pgleap/bin/pip install --no-index --find-links /tmp/wheels --no-cache-dir pgleap; \
    rm -rf /tmp/wheels; \
    /opt/pgleap/bin/pgleap --help >/dev/null

ENV PATH=/opt/pgleap/bin:$PATH \
    PGLEAP_STATE_DIR=/home/pgleap/.local/state/pgleap \
    TERM=dumb
# Non-root by default (an in-cluster Job: the Pod's ServiceAccount token is read by the
# kubernetes client, in-cluster config); with the Docker socket run it as --user 0.
USER 10001:10001
WORKDIR /home/pgleap
ENTRYPOINT ["pgleap"]
CMD ["--help"]
