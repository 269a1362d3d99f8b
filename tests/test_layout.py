"""The house: each module imports only modules listed before it in LAYERS, bottom first.
Inference (the facial_keypoints package) never imports training, benchmark or filter code, and
needs no root module but models.py, which only its torch backend loads; training imports no
inference module. The package is one import name: nothing else of the project is installed."""

import os

import pytest
from conftest import project_modules_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "facial_keypoints"
# Bottom to top: a module may import those listed before it, never one after it.
# train_data (the faces a run trains and validates on) and train_checkpoint (its checkpoint): jobs
# of train.py's, below the inference pipeline (blazeface, backends, tracking, runner, detect), which
# NOT_FOR_TRAINING keeps them from importing.
LAYERS = ["facial_keypoints.face_crop", "facial_keypoints.media", "facial_keypoints.outputs", "models",
          "metrics", "degradations", "make_overlays", "data_load", "train_data", "train_checkpoint",
          "facial_keypoints.backends",
          "facial_keypoints.blazeface", "facial_keypoints.tracking", "facial_keypoints.runner",
          "facial_keypoints.detect", "facial_keypoints", "facial_keypoints.__main__", "detect", "train",
          "evaluate", "export", "filters", "cluster", "jitter", "get_data", "dlib_baseline", "pseudo_label",
          "bench_speed", "bench_accuracy", "bench"]
BENCHMARK = {"dlib_baseline", "bench_speed", "bench_accuracy", "bench"}
INFERENCE = {name for name in LAYERS if name.startswith(PACKAGE)} | {"cluster"}
TRAINING = {"train", "train_data", "train_checkpoint"}
NOT_FOR_INFERENCE = BENCHMARK | TRAINING | {"filters", "evaluate", "export", "jitter", "get_data",
                                            "pseudo_label", "data_load", "metrics", "degradations",
                                            "make_overlays"}
NOT_FOR_TRAINING = BENCHMARK | {"facial_keypoints.blazeface", "facial_keypoints.backends",
                                "facial_keypoints.tracking", "facial_keypoints.runner",
                                "facial_keypoints.detect", "detect", "evaluate", "filters", "export",
                                "jitter"}


def path_of(module):
    parts = module.split(".")
    if parts == [PACKAGE]:
        return os.path.join(ROOT, PACKAGE, "__init__.py")
    return os.path.join(ROOT, *parts) + ".py"


def project_imports(module):
    """Every project module that `module` imports, at the top or inside a function."""
    package = PACKAGE if module.startswith(PACKAGE) else None
    return project_modules_in(path_of(module), package) & set(LAYERS)


def test_every_module_is_in_the_layout():
    modules = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}
    modules |= {f"{PACKAGE}.{name[:-3]}" for name in os.listdir(os.path.join(ROOT, PACKAGE))
                if name.endswith(".py") and name != "__init__.py"} | {PACKAGE}
    assert modules == set(LAYERS)


@pytest.mark.parametrize("module", LAYERS)
def test_a_module_imports_only_modules_below_it(module):
    below = set(LAYERS[:LAYERS.index(module)])
    assert project_imports(module) <= below, project_imports(module) - below
    if module in INFERENCE:
        assert not project_imports(module) & NOT_FOR_INFERENCE
    if module.startswith(PACKAGE):  # what `pip install .` brings runs without the clone
        assert project_imports(module) - {"models"} <= INFERENCE, project_imports(module)
    if module in TRAINING:
        assert not project_imports(module) & NOT_FOR_TRAINING


def test_no_script_or_module_over_600_lines():
    """A newcomer reads a file whole: every module of the project stays under 600 lines."""
    lengths = {module: sum(1 for _ in open(path_of(module), encoding="utf-8")) for module in LAYERS}
    assert {module: n for module, n in lengths.items() if n > 600} == {}
