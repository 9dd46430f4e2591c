"""Let `import torchvision` succeed beside a CPU-only torch when the torchvision wheel is a CUDA build.

Upstream Bunny imports torchvision (its projector builder, and timm) only for layer classes, never
for its C++ ops. PyPI's torchvision wheel is built for CUDA; next to the CPU torch wheel its `_C`
extension cannot load and `import torchvision` then dies registering fake kernels for
`torchvision::nms`/`qnms` ("operator torchvision::nms does not exist"). Declaring those two op
schemas first (no kernels) is enough. Where `_C` loads (CUDA machines, matching builds) nothing is
done. `make venv-bunny` installs a one-line `.pth` that arms this lazily at interpreter start, so
upstream's own scripts (`deepspeed bunny/train/train.py`, eval) work in .venv-bunny too.
"""
from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys
import sysconfig

PTH_NAME = "region_plugin_torchvision_cpu.pth"
PTH_LINE = ("import importlib.util as _u; _u.find_spec('region_plugin') and "
            "__import__('region_plugin.bunny.torchvision_cpu', fromlist=['_']).install_import_hook()\n")
_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_library = None  # keeps the op definitions alive (a collected Library object deregisters them)


def _extension_loads(package_dir: str) -> bool:
    """torchvision's own loader would do the same dlopen; a CUDA build beside CPU torch fails here."""
    import torch

    libs = sorted(glob.glob(os.path.join(package_dir, "_C.*")))
    try:
        torch.ops.load_library(libs[0])
        return True
    except (IndexError, OSError, ImportError, RuntimeError):
        return False


def ensure() -> bool:
    """Call before the first `import torchvision`; return True when the op schemas were declared."""
    global _library
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Hook)]  # find_spec below must not recurse
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    if _extension_loads(list(spec.submodule_search_locations)[0]):
        return False
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _library = lib
    return True


class _Hook(importlib.abc.MetaPathFinder):
    """Runs `ensure()` right before torchvision is first imported, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            ensure()
        return None


def install_import_hook() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


def install_pth(site_packages: str | None = None) -> str:
    """Write the `.pth` that arms the hook in every interpreter of this environment (atomic)."""
    directory = site_packages or sysconfig.get_paths()["purelib"]
    path = os.path.join(directory, PTH_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(PTH_LINE)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["--install-pth"]:
        sys.exit("usage: python -m region_plugin.bunny.torchvision_cpu --install-pth")
    print(f"wrote {install_pth()}")
