"""The course notebooks as a reviewer and a student read them: every measured figure in the
markdown is printed by a cell of the same notebook, the markdown stays within its word limit,
"Beyond the course" is one section at the end, and the graded steps are written out in cells.
These read the committed notebooks (their saved outputs); `make test` also runs them."""

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(name for name in os.listdir(ROOT) if re.match(r"[1-4]\. .*\.ipynb$", name))
WORD_LIMITS = {"2": 2500, "3": 1500}
# A measured figure: a decimal number with a unit of measurement (4.03 %, 1.25 ms, 9.5 min), or a
# range of two (4.03-4.80 %, 2.3 to 2.8 ms): both ends count.
FIGURE = re.compile(r"(?<![\w.])(\d+\.\d+)(?:\s*(?:-|–|to)\s*(\d+\.\d+))?\s*"
                    r"(?:%|ms\b|fps\b|px\b|points?\b|min(?:utes?)?\b)")


def cells(name):
    with open(os.path.join(ROOT, name)) as f:
        return json.load(f)["cells"]


def source(cell):
    return "".join(cell["source"])


def printed(cell):
    """What a code cell printed or displayed as text."""
    text = []
    for output in cell.get("outputs", []):
        text.append("".join(output.get("text", "")))
        text.append("".join(output.get("data", {}).get("text/plain", "")))
    return "".join(text)


def figures_in(text):
    return {number for pair in FIGURE.findall(text) for number in pair if number}


def is_printed(figure, outputs):
    """The figure as a whole number in the outputs: 5.0 is not found in 5.07, nor 4.8 in 14.8."""
    return re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", outputs) is not None


def markdown(name):
    return [source(c) for c in cells(name) if c["cell_type"] == "markdown"]


def test_the_four_notebooks_are_here():
    assert [name[0] for name in NOTEBOOKS] == ["1", "2", "3", "4"]


def test_figures_finds_measured_numbers_only():
    text = "NME 4.03 % and 9.5 min, 1.25ms, 3.5 points, 13.6 minutes, 2.3-2.8 ms; 112 px, epoch 4.2, v1.2"
    assert figures_in(text) == {"4.03", "9.5", "1.25", "3.5", "13.6", "2.3", "2.8"}
    assert is_printed("5.07", "NME 5.07%") and not is_printed("5.0", "NME 5.07%")
    assert not is_printed("4.8", "14.8 ms") and is_printed("4.8", "(4.8)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_figure_in_the_markdown_is_printed_by_a_cell(name):
    outputs = "\n".join(printed(c) for c in cells(name) if c["cell_type"] == "code")
    unprinted = sorted(f for f in figures_in("\n".join(markdown(name))) if not is_printed(f, outputs))
    assert not unprinted, f"{name}: figures in its markdown that no cell prints: {unprinted}"


@pytest.mark.parametrize("number, limit", sorted(WORD_LIMITS.items()))
def test_markdown_within_its_word_limit(number, limit):
    name = next(n for n in NOTEBOOKS if n.startswith(number))
    words = sum(len(text.split()) for text in markdown(name))
    assert words <= limit, f"{name}: {words} words of markdown, at most {limit}"


@pytest.mark.parametrize("number", ["2", "3"])
def test_beyond_the_course_is_one_section_at_the_end(number):
    name = next(n for n in NOTEBOOKS if n.startswith(number))
    texts = [source(c) for c in cells(name)]
    starts = [i for i, text in enumerate(texts) if re.search(r"^#+ Beyond the course", text, re.M)]
    assert len(starts) == 1, f"{name}: {len(starts)} 'Beyond the course' headings"
    after = [text for text in texts[starts[0] + 1:] if re.search(r"^#+ Question|^## ", text, re.M)]
    assert not after, f"{name}: course sections after 'Beyond the course'"


def test_notebook_2_writes_out_the_graded_steps():
    code = [source(c) for c in cells(NOTEBOOKS[1]) if c["cell_type"] == "code"]
    assert any("transform=data_transform" in c for c in code)
    assert any("criterion =" in c for c in code) and any("optimizer = optim." in c for c in code)
    loop = next(c for c in code if c.startswith("def train_net"))
    for step in ("net(images)", "criterion(", "optimizer.zero_grad()", "loss.backward()", "optimizer.step()"):
        assert step in loop, f"the training loop does not show {step}"


def test_notebook_3_writes_out_the_per_face_steps():
    code = [source(c) for c in cells(NOTEBOOKS[2]) if c["cell_type"] == "code"]
    assert any("net.load_state_dict(" in c and "Net(" in c for c in code)
    loop = next(c for c in code if "for ax, box in zip(axes[0], faces):" in c)
    for step in ("cv2.COLOR_RGB2GRAY", "/ 255.0", "cv2.resize", "net(roi_tensor)", "denormalize_keypoints"):
        assert step in loop, f"the per-face loop does not show {step}"
