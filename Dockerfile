# One image for the Ray head and the GPU workers of cluster/aws-gpu.yaml and cluster/kuberay/:
#
#   docker build -t registry.example.com/sweeper:0.1.0 .
#   docker push registry.example.com/sweeper:0.1.0
#
# The tag is the package version (pyproject.toml); the cluster configs name the same tag. Nothing
# secret is baked in: MLflow credentials and the Ray token arrive as environment variables or
# mounted files when a container starts (cluster/README.md).

# torch 2.7.1 requires triton 3.3.1, which meets the package's triton>=3.2, so pip keeps the
# image's CUDA torch instead of downloading another one. CUDA 12.8 covers A10G, A100 and H100/H200.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

# rsync and ssh: the Ray cluster launcher syncs files into the container and the head's autoscaler
# reaches new workers over SSH. wget: KubeRay's readiness and liveness probes call it.
# uid 1000, as the `ubuntu` user of the cloud images: files the launcher syncs onto a host (the Ray
# token, the MLflow env file) stay readable inside the container.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client rsync wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash sweeper

# Every node of a cluster, KubeRay's `rayVersion` and the client you submit from must run the same
# Ray; the cluster configs state this version too (tests/test_cluster_configs.py keeps them equal).
ARG RAY_VERSION=2.60.0

WORKDIR /opt/sweeper
COPY . .
# boto3: the AWS autoscaler that runs on the launcher's head. DL3013 takes the local package
# ".[cluster]" for an unpinned one; its dependencies follow the ranges in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cluster]" "ray[default,tune]==${RAY_VERSION}" "boto3>=1.34" \
    && python -c "import ray, sweeper.cli, torch; print(torch.__version__, ray.__version__)"

ENV PYTHONUNBUFFERED=1
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
# Jobs write runs/<name>/ (and Ray Tune's results) under the working directory: the user's home.
WORKDIR /home/sweeper
