"""MLX stays inside clap_mlx: the monitor reaches the model only through clap_mlx's API."""

import ast
import subprocess
import sys
from pathlib import Path

MONITOR = Path(__file__).parents[1] / "monitor"


def test_monitor_source_never_imports_mlx_nor_touches_its_streams():
    offenders = []
    for path in sorted(MONITOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "mlx"]
            if isinstance(node, ast.Attribute) and node.attr == "clear_streams":
                offenders.append(f"{path.name}:{node.lineno} calls clear_streams (use clap_mlx.release_thread)")
    assert offenders == []


def test_monitor_modules_without_the_model_load_no_mlx():
    """Config, rules, sinks and the CLI entry point import without clap_mlx: `check-config`
    and `devices` start fast and work where MLX cannot load."""
    modules = ["monitor.cli", "monitor.config", "monitor.config_loader", "monitor.rules", "monitor.events",
               "monitor.ringbuffer", "monitor.windower", "monitor.history", "monitor.sinks.base",
               "monitor.sinks.jsonlog", "monitor.sinks.clips"]
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('mlx', 'clap_mlx'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'clap_mlx')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=MONITOR.parent, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
