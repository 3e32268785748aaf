"""The command the README and the Kubernetes config's header give for checking that config
works as written on a workstation, which has none of the pods' secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "kubernetes" / "base" / "switchboard.yaml"


def test_the_documented_check_config_command_passes_without_the_pods_secrets() -> None:
    """README's and the file header's ``check-config`` command (the same one) exits 0 from the
    repository root in an environment holding no provider key."""
    header = [line.removeprefix("#").strip() for line in CONFIG.read_text().splitlines()
              if line.startswith("#") and "switchboard check-config" in line]
    assert len(header) == 1, header
    command = header[0]
    readme = re.findall(r"`([^`]*switchboard check-config deploy/kubernetes/[^`]*)`",
                        (REPO / "README.md").read_text())
    assert readme == [command]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHBOARD_") and not k.endswith("_API_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(["sh", "-c", command], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("deploy/kubernetes/base/switchboard.yaml: ok")
