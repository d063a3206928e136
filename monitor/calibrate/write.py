"""`calibrate --write`: a copy of the config with new thresholds, the user's comments and layout kept.

ruamel.yaml's round-trip mode keeps comments, key order, flow/block styles and quoting;
the indentation is guessed from the file. The input file is never written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_thresholds(src: str | Path, dst: str | Path, thresholds: dict[str, tuple[float, float | None]]) -> None:
    """Write `dst`: `src` with each named label's `threshold` (and `end_threshold`, when not
    None) set. A label without a `threshold` key gets one after its `name`/`prompts`/`examples`."""
    from ruamel.yaml import YAML

    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"--write {dst}: that is the input config; write the calibrated copy to another file")
    text = src.read_text(encoding="utf-8")
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the user's long lines
    yaml.indent(**_indentation(text))
    # ruamel writes a null as nothing ("device:"); keep the word the file had
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(text)
    for item in doc["labels"]:
        if item["name"] not in thresholds:
            continue
        threshold, end = thresholds[item["name"]]
        if "threshold" in item:
            item["threshold"] = threshold
        else:
            after = max(i for i, key in enumerate(item) if key in ("name", "prompts", "examples"))
            item.insert(after + 1, "threshold", threshold)
        if end is not None:
            item["end_threshold"] = end
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=dst.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        yaml.dump(doc, f)
    os.replace(f.name, dst)


def _indentation(text: str) -> dict[str, int]:
    """ruamel's indent settings from the file: the first nested key's indent (mapping) and the
    first block-sequence dash's indent under its key (offset); items' keys follow the dash."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    mapping = next((len(line) - len(line.lstrip()) for line in lines
                    if line[0] == " " and not line.lstrip().startswith("- ")), 2)
    offset = next((len(line) - len(line.lstrip()) for line in lines if line.lstrip().startswith("- ")), 0)
    return {"mapping": mapping, "sequence": offset + 2, "offset": offset}
