# inferstack's endpoint picker (EPP) for Kubernetes: `inferstack render --epp inferstack
# --epp-image REGISTRY/PATH:TAG` renders a Deployment that runs this image as
# `inferstack epp --config /etc/inferstack/epp.yaml` (UID 65532, read-only root, /tmp writable).
# `render --batch` runs the same image as the batch service (`inferstack batch serve ...`, port 8091).
#
# Build and push (see docs/kube.md, "Our endpoint picker image"):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/inferstack:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPOSITORY/inferstack:0.1.0
#
# It installs the package the way `make setup` does (pip into a virtualenv), without the test
# extras and not editable. The package needs no torch: vLLM and inference-perf live in their own
# environments, which this image does not create.
FROM docker.io/library/python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/inferstack \
    PATH=/opt/inferstack/bin:$PATH \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_STATE_HOME=/tmp/.state \
    MPLCONFIGDIR=/tmp/.matplotlib

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --upgrade pip \
    && pip install . \
    && rm -rf /src \
    && inferstack --help >/dev/null

WORKDIR /
USER 65532:65532
EXPOSE 9002 9090
ENTRYPOINT ["inferstack"]
CMD ["epp", "--config", "/etc/inferstack/epp.yaml"]
