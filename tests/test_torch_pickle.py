"""clap_mlx.torch_pickle: torch.save archives read as numpy without torch, and pickles that are
not plain tensors refused without running them."""

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clap_mlx.torch_pickle import read_torch_bin


def test_torch_bin_strided_views_and_dtypes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "transposed": base.t(),
        "offset_view": base[1:, 2:5],
        "scalar": torch.tensor(3.5),
        "half": torch.linspace(-2, 2, 7).half(),
        "bfloat16": torch.linspace(-2, 2, 7).bfloat16(),
        "int64": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
    }
    torch.save(tensors, tmp_path / "w.bin")
    loaded = read_torch_bin(tmp_path / "w.bin")
    for key, value in tensors.items():
        np.testing.assert_array_equal(loaded[key], value.float().numpy() if key == "bfloat16" else value.numpy(), err_msg=key)


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_style_archive(path: Path, payload: object) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("archive/byteorder", "little")


def test_malicious_pickle_is_rejected_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _torch_style_archive(tmp_path / "pytorch_model.bin", {"weight": _RunsShell(marker)})
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|os)\.system"):
        read_torch_bin(tmp_path / "pytorch_model.bin")
    assert not marker.exists()


def test_pickle_of_non_tensors_is_rejected(tmp_path):
    _torch_style_archive(tmp_path / "pytorch_model.bin", {"weight": [1, 2, 3]})
    with pytest.raises(ValueError, match="state dict of tensors"):
        read_torch_bin(tmp_path / "pytorch_model.bin")
