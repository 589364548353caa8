"""A per-export scratch folder as the current directory, for ONNX tools that write into it.

ONNX Runtime's symbolic shape inference (run by `quant_pre_process` and by onnxslim) saves
`sym_shape_infer_temp.onnx`, with its weights in a `<uuid>.data` file, into the current
directory whenever it cannot infer every shape (MultiHeadAttention, models with several
inputs), and no argument moves it. Two exports started in one folder would overwrite each
other's file, and test runs leave them in the repository.

The current directory belongs to the whole process: one lock lets one tool call at a time
change it, and the previous directory comes back afterwards. The export code passes only
absolute paths; a relative path another thread opens during such a call would resolve in
the scratch folder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CWD_LOCK = threading.RLock()


@contextmanager
def inside(folder: Path) -> Iterator[Path]:
    """Run the block with `folder` as the current directory, one block per process at a time."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(previous)
