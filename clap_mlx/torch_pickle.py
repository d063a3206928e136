"""Read a `torch.save`d state dict (pytorch_model.bin) without torch and without running pickled code.

torch >= 1.6 writes a zip archive: `<prefix>/data.pkl` (the pickled state dict, whose tensors
reference storages by persistent id) next to `<prefix>/data/<key>` (each storage's raw bytes).
The unpickler here allows only the globals that rebuild tensors, so a weights file that
tries to call anything else is rejected instead of run.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: object


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 for numpy: a strided view of the storage, copied."""
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides).copy()


def _rebuild_parameter(data: np.ndarray, *_unused) -> np.ndarray:
    return data


def _bfloat16_to_float32(raw: bytes) -> np.ndarray:
    return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a torch.save zip archive's data.pkl allowing only tensor-rebuilding globals."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, source: Path):
        super().__init__(archive.open(f"{prefix}/data.pkl"))
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load {module}.{name}: only tensors are allowed in a weights file"
        )

    def persistent_load(self, pid) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        if storage_type.dtype == "bfloat16":
            return _bfloat16_to_float32(raw)
        return np.frombuffer(raw, dtype=storage_type.dtype)


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """A `torch.save`d state dict as numpy arrays, without torch and without running pickled code."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip-format PyTorch checkpoint (torch >= 1.6); re-save it or use safetensors")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one */data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0].removesuffix("/data.pkl")
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        state = _TensorUnpickler(archive, prefix, path).load()
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return dict(state)
