"""The house: each module imports only modules below it (README's Layout table, bottom first).
Inference never imports training, benchmark or filter code; training imports no inference module."""

import os

import pytest
from conftest import imports_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bottom to top: a module may import those listed before it, never one after it.
LAYERS = ["face_crop", "models", "metrics", "make_overlays", "media", "data_load", "backends", "tracking",
          "runner", "detect", "train", "evaluate", "export", "filters", "cluster", "jitter", "get_data",
          "bench"]
INFERENCE = {"media", "backends", "tracking", "runner", "detect", "cluster"}
NOT_FOR_INFERENCE = {"train", "bench", "filters", "evaluate", "export", "jitter", "get_data", "data_load"}
NOT_FOR_TRAINING = {"backends", "tracking", "runner", "detect", "evaluate", "filters", "export", "bench",
                    "jitter"}


def project_imports(module):
    """Every project module that `module`.py imports, at the top or inside a function."""
    return imports_in(os.path.join(ROOT, module + ".py")) & set(LAYERS)


def test_every_module_is_in_the_layout():
    modules = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}
    assert modules == set(LAYERS)


@pytest.mark.parametrize("module", LAYERS)
def test_a_module_imports_only_modules_below_it(module):
    below = set(LAYERS[:LAYERS.index(module)])
    assert project_imports(module) <= below, project_imports(module) - below
    if module in INFERENCE:
        assert not project_imports(module) & NOT_FOR_INFERENCE
    if module == "train":
        assert not project_imports(module) & NOT_FOR_TRAINING
