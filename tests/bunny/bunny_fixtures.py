"""Session fixtures of the Bunny tests: tiny Bunny models and real upstream training runs, built once.

Loaded with `pytest_plugins = ["bunny_fixtures"]` from each Bunny test module (not a conftest.py:
a second conftest module would shadow tests/conftest.py for `from conftest import ...`).
"""
from __future__ import annotations

import pytest

from bunny_support import train_bunny
from region_plugin.tiny.bunny import build_tiny_bunny

_cache: dict = {}


def _once(key, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


@pytest.fixture(scope="session")
def bunny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("bunny")


@pytest.fixture(scope="session")
def tiny_bunny(bunny_root):
    """tiny_bunny(model_type) -> TinyBunny (8 layers, SigLIP 32 px / patch 8), built once per type."""
    return lambda mt: _once(("tiny", mt), lambda: build_tiny_bunny(str(bunny_root / f"tiny-{mt}"), mt))


@pytest.fixture(scope="session")
def bunny_run(tiny_bunny, bunny_root):
    """bunny_run(model_type, region, lora) -> (output dir, CompletedProcess) of one upstream training run."""
    def run(mt, region="25%", lora=True):
        name = f"bunny-{mt}-{'region' if region else 'all'}-{'lora' if lora else 'full'}"
        out = bunny_root / "runs" / name  # "lora" in the name: upstream's loader routes on it
        return _once(("run", mt, region, lora), lambda: (out, train_bunny(tiny_bunny(mt), out, region, lora)))
    return run
