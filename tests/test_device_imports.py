"""The device package must run where torch, timm and training/ do not exist."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.device

BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision', 'training'):
            raise ImportError('blocked on the device: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, edgeface_cam
names = [m.name for m in pkgutil.walk_packages(edgeface_cam.__path__, 'edgeface_cam.')
         if m.name != 'edgeface_cam.__main__']
for n in names:
    importlib.import_module(n)
bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'training')]
assert not bad, bad
print(len(names))
"""


def test_every_device_module_imports_without_torch_timm_or_training() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 4  # align, detect, embed, runtime at least


def test_device_sources_never_name_the_training_stack() -> None:
    for path in (ROOT / "edgeface_cam").rglob("*.py"):
        for line in path.read_text().splitlines():
            code = line.split("#")[0].strip()
            if code.startswith(("import ", "from ")):
                mod = code.split()[1].split(".")[0]
                assert mod not in ("torch", "timm", "torchvision", "training"), (path, line)
