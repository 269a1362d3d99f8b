"""The labelling convention is explicit (issue 28): a two-head model (models.TwoHeadNet) is read
one head at a time, 300w by default and course when asked; a one-head model (models.Net) is read
in its only convention; a head the model lacks is one line; every JSON record names its
convention; evaluate.py scores the head that matches the labels.

The models are tiny and built here: each head reads every crop as the same face, the two heads'
faces differ in the jaw, so which head a number came from can be told."""

import json

import numpy as np
import pytest
import torch
from conftest import face_keypoints

import evaluate
import filters
import models
from facial_keypoints import backends, detect
from facial_keypoints.backends import ConventionError, load_backend, predict_normalized

SIZE = 32
HALF = (SIZE - 1) / 2
# Each head's face in crop pixels: mirror-symmetric (the face check passes), the 300w head's jaw lower.
FACES = {"course": face_keypoints(center=(HALF, HALF - 1), scale=0.25)}
FACES["300w"] = FACES["course"] + np.r_[np.full(17, 2.0), np.zeros(51)][:, None] * [0, 1]
META = dict(input_size=SIZE, crop_margin=1.2, crop_shift=0.157, command="tests/test_conventions.py")


def normalised(points):
    return (points - HALF) / HALF


def set_constant_face(head, face, grid):
    """An integral head (1x1 convolution) whose maps put every keypoint of `face` where it is,
    whatever the crop: no weights, equal scores in every cell, the offsets in the bias."""
    cell = SIZE / grid
    bias = torch.zeros(3, models.NUM_KEYPOINTS)
    bias[1:] = torch.as_tensor((face / cell - (grid - 1) / 2).T, dtype=torch.float32)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(bias.flatten())


@pytest.fixture(scope="module")
def two_head_pt(tmp_path_factory):
    """A two-head .pt as train.py saves one (its metadata says its conventions)."""
    torch.manual_seed(0)
    model = models.TwoHeadNet(SIZE, backbone="net", widths=[4] * 5).eval()
    for name in models.CONVENTIONS:
        set_constant_face(model.heads[name], FACES[name], models.feature_map_side(SIZE))
    path = str(tmp_path_factory.mktemp("models") / "twohead.pt")
    models.save_model(model, path, dict(META, arch="twohead-net", model_options={"widths": [4] * 5},
                                        conventions=list(models.CONVENTIONS)))
    return path


@pytest.fixture(scope="module")
def one_head_pt(tmp_path_factory):
    """A course Net .pt whose metadata predates `conventions`, as Notebook 2's course_model.pt."""
    model = models.Net(SIZE, widths=[4] * 5)
    set_constant_face(model.keypoint_maps, FACES["course"], models.feature_map_side(SIZE))
    path = str(tmp_path_factory.mktemp("models") / "course_net.pt")
    models.save_model(model, path, dict(META, arch="net", model_options={"widths": [4] * 5}))
    return path


def two_head_onnx(path, conventions=("course", "300w")):
    """A tiny ONNX graph as export.py lays out a two-head one: crops (batch, 1, S, S) -> (batch, 2,
    136), each head's constant face in FACES, in the order `conventions` says (its metadata)."""
    import onnx
    from onnx import TensorProto, helper

    constant = np.concatenate([normalised(FACES[name]).ravel() for name in conventions]).astype(np.float32)
    initializers = [helper.make_tensor("w", TensorProto.FLOAT, [SIZE * SIZE, constant.size],
                                       np.zeros(SIZE * SIZE * constant.size, np.float32)),
                    helper.make_tensor("b", TensorProto.FLOAT, [constant.size], constant),
                    helper.make_tensor("shape", TensorProto.INT64, [3], [-1, len(conventions), 136])]
    nodes = [helper.make_node("Flatten", ["crops"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["p"]),
             helper.make_node("Add", ["p", "b"], ["q"]),
             helper.make_node("Reshape", ["q", "shape"], ["keypoints"])]
    crops = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])
    heads = len(conventions)
    keypoints = helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["batch", heads, 136])
    graph = helper.make_graph(nodes, "two heads", [crops], [keypoints], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    fields = dict(META, arch="twohead-net", conventions=list(conventions))
    helper.set_model_props(model, {key: json.dumps(value) for key, value in fields.items()})
    onnx.save(model, str(path))
    return str(path)


CROPS = np.random.default_rng(0).random((3, 1, SIZE, SIZE), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The backends and the library.

@pytest.mark.parametrize("convention, read", [(None, "300w"), ("300w", "300w"), ("course", "course")])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_two_head_model_reads_the_chosen_head_only(two_head_pt, tmp_path, backend, convention, read):
    # the ONNX file lists its heads the other way round: the metadata's order, not a fixed one, decides
    path = two_head_pt if backend == "torch" else two_head_onnx(tmp_path / "m.onnx", ("300w", "course"))
    model = load_backend(backend, path, convention)
    assert set(model.conventions) == {"course", "300w"} and model.convention == read
    for flip in (False, True):
        np.testing.assert_allclose(predict_normalized(model, CROPS, flip_average=flip),
                                   np.broadcast_to(normalised(FACES[read]), (3, 68, 2)), atol=1e-4)


def test_a_one_head_model_reads_course_by_default_and_has_no_300w_head(one_head_pt):
    detector = detect.KeypointDetector(one_head_pt, backend="torch")
    assert detector.conventions == ("course",) and detector.convention == "course"
    np.testing.assert_allclose(predict_normalized(detector.backend, CROPS)[0], normalised(FACES["course"]),
                               atol=1e-4)
    lacks = r"course_net\.pt: --convention 300w: the model has no 300w head"
    with pytest.raises(ConventionError, match=lacks):
        detect.KeypointDetector(one_head_pt, convention="300w")


def test_the_package_names_the_two_heads_in_the_networks_order():
    """backends cannot import models (PyTorch): its copy of the order must be the network's, or a
    model without the metadata key would be read on the wrong head."""
    assert backends.TWO_HEAD_CONVENTIONS == models.CONVENTIONS


def test_the_conventions_come_from_the_metadata_else_from_the_output_shape():
    assert backends.model_conventions(None, (1, 2, 136)) == ("course", "300w")
    assert backends.model_conventions({}, (1, 136)) == ("course",)
    assert backends.model_conventions({"conventions": ["300w", "course"]}, (1, 2, 136)) == ("300w", "course")
    for wrong in (["course"], ["300w", "300w"], "course,300w"):
        with pytest.raises(backends.DataError, match="its metadata says conventions"):
            backends.model_conventions({"conventions": wrong}, (1, 2, 136))
    with pytest.raises(backends.DataError, match=r"m\.onnx: .* for 1 outputs per crop"):
        backends.model_conventions({"conventions": ["course", "300w"]}, (1, 136), "m.onnx")


# ---------------------------------------------------------------------------------------------
# The command lines: --convention, the JSON records, a head the model lacks.

def run_detect(tmp_path, model, *extra):
    """detect.py on its default photo (the astronaut) with `model`: the JSON record."""
    out = tmp_path / "k.jsonl"
    # the Haar cascade, upright: one candidate, the face, whatever a test model's face check says
    assert detect.main(["--model", model, "--out", str(tmp_path), "--json", str(out), "--workers", "1",
                        "--face-detector", "haar", "--upright-only", *extra]) == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    return record


def test_every_json_record_names_its_convention(two_head_pt, one_head_pt, tmp_path):
    default = run_detect(tmp_path, two_head_pt)
    course = run_detect(tmp_path, two_head_pt, "--convention", "course")
    assert default["convention"] == "300w" and course["convention"] == "course"
    assert list(default) == ["image", "width", "height", "convention", "faces"]
    assert len(default["faces"]) == len(course["faces"]) == 1
    # the same face, read by the other head: its jaw lower in the crop, the rest where it was
    jaw_drop = np.subtract(default["faces"][0]["keypoints"], course["faces"][0]["keypoints"])[:17, 1]
    assert (jaw_drop > 1).all()
    assert run_detect(tmp_path, one_head_pt)["convention"] == "course"
    assert run_detect(tmp_path, one_head_pt, "--convention", "course")["convention"] == "course"


@pytest.mark.parametrize("program", ["detect", "filters"])
def test_a_head_the_model_lacks_is_one_line_and_status_2(one_head_pt, tmp_path, capsys, program):
    main = detect.main if program == "detect" else filters.main
    assert main(["--model", one_head_pt, "--out", str(tmp_path), "--convention", "300w"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}.py: {one_head_pt}: --convention 300w:")
    assert not list(tmp_path.iterdir())  # nothing was started


# ---------------------------------------------------------------------------------------------
# evaluate.py: the head that matches the labelled set.

def test_the_labels_convention_comes_from_the_image_names():
    course = ["Abdel_Aziz_Al-Hakim_02.jpg", "training/Kim_Clijsters_11.jpg"]
    assert evaluate.labels_convention(course) == "course"
    wild = ["lfpw-image_0001_0.jpg", "training/helen-1_2.jpg", "afw-3_1.jpg"]
    assert evaluate.labels_convention(wild) == "300w"
    assert evaluate.labels_convention(["lfpw-image_0001_0.jpg", "Kim_Clijsters_11.jpg"]) == "course"  # mixed
    assert evaluate.labels_convention(["Lfpw-1_0.jpg", "lfpw_1_0.jpg"]) == "course"


@pytest.fixture
def two_sets(tmp_path):
    """The same two labelled images as a course-named set and as a wild-named one: (csv, images) each."""
    import cv2
    images = tmp_path / "images"
    images.mkdir()
    header = "," + ",".join(map(str, range(136)))
    sets = {}
    for kind, names in (("course", ["Person_A_01.jpg", "Person_B_01.jpg"]),
                        ("300w", ["lfpw-1_0.jpg", "afw-2_1.jpg"])):
        rows = []
        for i, name in enumerate(names):
            cv2.imwrite(str(images / name), np.full((120, 120, 3), 60 + 40 * i, np.uint8))
            points = face_keypoints(center=(60, 62), scale=0.7).ravel()
            rows.append(name + "," + ",".join(f"{v:.1f}" for v in points))
        (tmp_path / f"{kind}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
        sets[kind] = str(tmp_path / f"{kind}.csv"), str(images)
    return sets


def scored(model, data, convention=None):
    return evaluate.evaluate(model, "labelled-box", *data, progress=False, backend="torch",
                             convention=convention)


def test_evaluate_scores_the_head_that_matches_the_set(two_head_pt, two_sets):
    course, wild = scored(two_head_pt, two_sets["course"]), scored(two_head_pt, two_sets["300w"])
    assert (course["convention"], course["labels"]) == ("course", "course")
    assert (wild["convention"], wild["labels"]) == ("300w", "300w")
    # the predictions are the named head's: the same box read by the other head differs in the jaw
    assert np.allclose(wild["pred"], scored(two_head_pt, two_sets["300w"], "300w")["pred"])
    overridden = scored(two_head_pt, two_sets["300w"], "course")
    assert overridden["convention"] == "course" and np.allclose(overridden["pred"], course["pred"])
    assert (wild["pred"][:, :17, 1] - course["pred"][:, :17, 1] > 1).all()


def test_evaluate_says_which_head_it_scored(two_head_pt, one_head_pt, two_sets, capsys):
    csv, images = two_sets["300w"]
    evaluate.main(["--model", two_head_pt, "--csv", csv, "--images", images, "--protocol", "labelled-box"])
    assert "scored: the 300w head (the labels' convention)" in capsys.readouterr().out
    # a course Net has no 300w head: scored on its own, and the report says the labels differ
    m = evaluate.main(["--model", one_head_pt, "--csv", csv, "--images", images, "--protocol",
                       "labelled-box"])
    out = capsys.readouterr().out
    assert m["convention"] == "course" and "the course head, on labels in the 300w convention" in out
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--model", one_head_pt, "--csv", csv, "--images", images, "--convention", "300w"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and f"{one_head_pt}: --convention 300w" in err[0]
