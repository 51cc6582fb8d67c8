"""graph_runtime never imports torch: a process that only validates or converts stays light."""

from __future__ import annotations

import subprocess
import sys


def test_importing_graph_runtime_leaves_torch_out() -> None:
    code = ("import sys, graph_runtime, graph_runtime.ui_format, graph_runtime.png, graph_runtime.cli, graph_runtime.batch; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
