# modelyard images. Targets:
#   docker build --target cpu -t modelyard:cpu .   (default; TensorFlow on CPU + onnxruntime)
#   docker build --target gpu -t modelyard:gpu .   (CUDA TensorFlow + onnxruntime-gpu; run with --gpus all)
# Both images run any part of the system: `modelyard run train`, `modelyard up`,
# `mlflow server`, ... (see docker-compose.yml).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 MODELYARD_HOME=/var/lib/modelyard
RUN useradd --create-home --uid 1000 modelyard && mkdir -p /var/lib/modelyard && chown modelyard /var/lib/modelyard
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelyard ./modelyard
COPY examples ./examples

FROM base AS gpu
# TensorFlow's and-cuda extra and onnxruntime-gpu bring their CUDA libraries as wheels; the host's
# NVIDIA driver comes in through the container runtime. Exactly one ONNX Runtime is installed.
RUN pip install '.[platform,gpu]' \
 && python - <<'PY'
# Both must be built for the same CUDA major, or one of them cannot load its kernels.
import onnxruntime, tensorflow as tf
tf_cuda = tf.sysconfig.get_build_info().get("cuda_version", "")
ort_cuda = getattr(onnxruntime.capi.build_and_package_info, "cuda_version", "")
assert tf_cuda and ort_cuda and tf_cuda.split(".")[0] == ort_cuda.split(".")[0], (tf_cuda, ort_cuda)
print("CUDA major", tf_cuda.split(".")[0], "for TensorFlow and ONNX Runtime")
PY
USER modelyard
ENTRYPOINT ["modelyard"]
CMD ["--help"]

FROM base AS cpu
RUN pip install '.[platform,cpu]'
USER modelyard
ENTRYPOINT ["modelyard"]
CMD ["--help"]
