"""bench_model.py's onnxruntime side: the same random weights exported with torch.onnx, run by
onnxruntime (2 intra-op threads, like the other sides). Benchmark-only: the `bench` extra.

Exports go to benchmarks/.cache/onnx/<weights fingerprint>/, one graph per workload (the shapes,
and for the audio tower the is_longer pattern, are fixed at export). The audio tower cannot go
through the dynamo exporter: `torch.export` stops at the fused patch embedding's data-dependent
branch (`if len(is_longer_idx) > 0` in transformers' ClapAudioPatchEmbed), so it is traced with
the TorchScript exporter (`dynamo=False`), which records the branch this workload's input takes.
Each export's exporter and the dynamo error are kept in a .json next to the graph.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _common import CACHE
from workloads import tower_inputs

EXPORTS = CACHE / "onnx"


def _fingerprint(folder: Path) -> str:
    # torch's version from its metadata: importing torch would add to this worker's peak RSS
    weights = max(folder.glob("*.safetensors"), key=lambda p: p.stat().st_size)
    stat = weights.stat()
    key = f"{folder.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|torch {metadata.version('torch')}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _dynamo_failure(error: Exception) -> str:
    """The exception summary and source line of a failed torch.export, without the advice text."""
    text = str(error)
    summary = re.search(r"^<class '([^']+)'>: (.*)$", text, re.M)
    cause = re.search(r"^Caused by: (.*)$", text, re.M)
    parts = [f"{summary.group(1)}: {summary.group(2)}" if summary else f"{type(error).__name__}: {text.splitlines()[0]}"]
    return " ".join(parts + ([f"at {cause.group(1)}"] if cause else []))


class Exporter:
    """Exports each tower workload once (per weights and torch version) and opens onnxruntime sessions."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.dir = EXPORTS / _fingerprint(folder)
        self._model = None
        self._audio_dynamo_error: str | None = None

    @property
    def model(self):
        if self._model is None:
            from transformers import ClapModel

            self._model = ClapModel.from_pretrained(self.folder).eval()
        return self._model

    def export(self, name: str, tower: str, inputs: dict[str, np.ndarray]) -> tuple[Path, dict]:
        path, meta_path = self.dir / f"{name}.onnx", self.dir / f"{name}.json"
        if path.is_file() and meta_path.is_file():
            return path, {**json.loads(meta_path.read_text()), "exported_now": False}
        import torch

        self.dir.mkdir(parents=True, exist_ok=True)
        module = _tower_module(tower, self.model, list(inputs))
        args = tuple(torch.from_numpy(a) for a in inputs.values())
        meta: dict = {}
        if tower == "audio" and self._audio_dynamo_error is None:
            try:
                torch.onnx.export(module, args, str(path), dynamo=True, input_names=list(inputs))
                meta["exporter"] = "dynamo"
            except Exception as error:  # noqa: BLE001  (any export failure: record it, then trace instead)
                self._audio_dynamo_error = _dynamo_failure(error)
        if "exporter" not in meta and tower == "audio":
            meta = {"exporter": "torchscript (dynamo=False)", "dynamo_error": self._audio_dynamo_error}
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(inputs),
                              output_names=["embeds"])
        elif "exporter" not in meta:
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=list(inputs))
            meta["exporter"] = "dynamo"
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        return path, {**meta, "exported_now": True}


def _tower_module(tower: str, model, names: list[str]):
    """The audio or text tower of a transformers ClapModel as a module taking `names` in order."""
    import torch

    features = model.get_audio_features if tower == "audio" else model.get_text_features

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # the weights are the module's parameters

        def forward(self, *inputs):
            return features(**dict(zip(names, inputs))).pooler_output

    return Tower().eval()


def session_runner(path: Path, inputs: dict[str, np.ndarray]) -> Callable[[], np.ndarray]:
    """A call of the exported graph; the session opens on the first call (the untimed warm-up)."""
    session = None

    def run() -> np.ndarray:
        nonlocal session
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
            # Its pool threads otherwise spin on after a run and take the cores from the side
            # timed next in the round (clap_mlx's 1-label text forward measured ~136 ms after it, ~75 alone).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name] for i in session.get_inputs()}  # a traced-out input is absent
        return session.run(None, feed)[0]

    return run


def onnx_side(folder: Path, tokenize, workload_names: tuple[str, ...], labels: list[str]) -> tuple[dict, dict]:
    """{workload: run} for the tower workloads (no feature extraction in ONNX) and {workload: export info}.
    Exporting loads torch and the model into this process: its peak RSS then counts them
    (`exported_now` in the info)."""
    exporter = Exporter(folder)
    runs, info = {}, {}
    for name in workload_names:
        if name.startswith("audio"):
            batch, longer = int(name.split()[1][1:]), "is_longer=True" in name
            features, is_longer = tower_inputs(folder, batch, longer)
            inputs = {"input_features": features, "is_longer": is_longer.reshape(-1, 1)}
            tower = "audio"
        elif name.startswith("text"):
            ids, mask = tokenize(labels[: int(name.split()[1])])
            inputs = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
            tower = "text"
        else:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path, info[name] = exporter.export(slug, tower, inputs)
        runs[name] = session_runner(path, inputs)
    return runs, info
