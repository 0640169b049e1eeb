"""The public names of components.runtime: declared, sorted, complete, and cheap to import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from components import runtime

MODULES = (
    "assets",
    "delivery",
    "manifest",
    "media",
    "models",
    "registry",
    "settings",
    "soundtrack",
    "spec",
    "step",
    "store",
    "telemetry",
    "tensors",
    "territory",
)


def test_package_all_is_sorted_and_every_name_resolves_to_its_module() -> None:
    assert runtime.__all__ == sorted(runtime.__all__)
    assert set(runtime.__all__) == set(runtime._EXPORTS)
    for name in runtime.__all__:
        module = importlib.import_module(f"components.runtime.{runtime._EXPORTS[name]}")
        assert getattr(runtime, name) is getattr(module, name), name
        assert name in module.__all__, f"{name} is re-exported but not public in {module.__name__}"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        runtime.nothing_here  # noqa: B018


@pytest.mark.parametrize("module_name", MODULES)
def test_module_all_lists_only_existing_names_with_docstrings(module_name: str) -> None:
    module = importlib.import_module(f"components.runtime.{module_name}")
    assert module.__doc__, module_name
    # isort style: CONSTANTS first, then the other names, each group in ASCII order
    assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) and getattr(value, "__module__", "").startswith("components."):
            assert value.__doc__, f"{module_name}.{name} has no docstring"


def test_importing_the_package_and_the_spec_stays_light() -> None:
    # `adrender validate` must not pay for torch, mlflow or ffmpeg-python
    code = (
        "import sys, components.runtime, components.runtime.spec, pipelines.cli\n"
        "heavy = [m for m in ('torch', 'mlflow', 'ffmpeg', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
