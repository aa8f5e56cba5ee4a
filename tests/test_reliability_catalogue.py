"""The reliability catalogue: every bad input, fault and misuse we know of, run, and its outcome checked.

Each case of reliability_cases.py sets up one problem, runs the command (or the model's input check), and
asserts the exit code and that the message names the culprit (a file, an image id, an annotation id, an
option). The last test renders the cases into docs/reliability.md and fails if the committed file differs,
so the page cannot go stale: MRCNN_WRITE_CATALOGUE=1 writes it instead.
"""
import ast
import importlib
import os
import re
from pathlib import Path

import pytest
import torch

from mrcnn_from_scratch import small_config
from mrcnn_from_scratch.__main__ import main
from mrcnn_from_scratch.checks import check_inputs

from reliability_cases import CASES, MODEL_CASES, OWN_TESTS, TINY_SET, Setup, first_annotation

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

DOC = Path(__file__).parents[1] / "docs" / "reliability.md"
PROGRESS = re.compile(r"\d+/\d+ \[")  # tqdm's progress bar, on stderr
OUTCOMES = {}  # case name -> (group, name, command, outcome, message): the page's rows, filled as cases pass


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main(["train", "--data", str(shapes), "--out", str(out), "--iters", "2", "--workers", "0", "--val-every", "0",
          *TINY_SET])
    return out


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case, shapes, run, tmp_path, monkeypatch, capsys):
    setup = Setup(tmp_path, shapes, run, monkeypatch)
    argv = case.argv(setup)
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    printed = out + err
    assert code == case.code, printed[-2000:]
    assert re.search(case.says, printed, re.MULTILINE), printed[-2000:]
    if code:  # an expected failure is one line, with no traceback
        messages = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
        assert "Traceback" not in printed, err
        if case.lines is None:  # argparse shows the usage, then the error
            assert messages[0].startswith("usage:") and re.search(case.says, messages[-1]), err
        else:
            assert len(messages) == case.lines, err
    assert case.after(setup)
    outcome = f"exit {code}" + (f"; {case.note}" if case.note else "")
    OUTCOMES[case.name] = (case.group, case.name, argv[0], outcome, case.says)


def test_debug_shows_the_traceback(shapes, tmp_path, monkeypatch):
    setup = Setup(tmp_path, shapes, shapes, monkeypatch)
    with pytest.raises(ValueError, match=r"area must be a number, got 'big'") as raised:
        main(setup.train_on(first_annotation(area="big"), None, "--debug"))
    assert type(raised.value).__name__ == "DataError"  # raised with its traceback, not printed as a line
    OUTCOMES["--debug"] = ("options", "--debug with any expected failure", "train", "the traceback",
                           "DataError: … area must be a number, got 'big'")


@pytest.mark.parametrize("name, images, targets, error, says", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_model_input_case(name, images, targets, error, says):
    with pytest.raises(error, match=says):
        check_inputs(images, targets, small_config(4), torch.float32)
    OUTCOMES[name] = ("model", name, "model(images, targets)", error.__name__, says)


def test_a_3x16x2000_image_works():
    check_inputs([torch.rand(3, 16, 2000)], None, small_config(4), torch.float32)  # 1×128 after resizing
    OUTCOMES["long"] = ("model", "a 3×16×2000 image (max_size 128)", "model(images)", "works", "")


# What running a row's command looks like in a test's code: string constants it passes (a command line) or
# names it calls. A command not listed here must appear word for word, each word as a constant or a name.
COMMAND_IN_CODE = {"torchrun": {"torch.distributed.run"},  # torchrun is `python -m torch.distributed.run`
                   "model(images, targets)": {"check_inputs"}}  # the model's input check, as in the rows above


def code_of(tree: ast.Module, test: str) -> list[ast.AST]:
    """The nodes of the test's definition and of the module's functions it calls, at any depth."""
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    nodes, todo, seen = [], [test], {test}
    while todo:
        for node in ast.walk(functions[todo.pop()]):
            nodes.append(node)
            if isinstance(node, ast.Name) and node.id in functions and node.id not in seen:
                seen.add(node.id)
                todo.append(node.id)
    return nodes


def words_of(nodes: list[ast.AST]) -> set[str]:
    """The string constants, names and attribute names among `nodes` (not comments)."""
    return ({node.value for node in nodes if isinstance(node, ast.Constant) and isinstance(node.value, str)}
            | {node.id for node in nodes if isinstance(node, ast.Name)}
            | {node.attr for node in nodes if isinstance(node, ast.Attribute)})


def skip_marks(function, module) -> list[str]:
    """The skip and skipif marks that skip this test here (a skipif's condition is a bool by now)."""
    module_marks = getattr(module, "pytestmark", [])  # a list of marks, or one
    module_marks = module_marks if isinstance(module_marks, list) else [module_marks]
    marks = [*getattr(function, "pytestmark", []), *module_marks]
    marks = [getattr(mark, "mark", mark) for mark in marks]  # a MarkDecorator holds its Mark
    return [f"{mark.name}: {mark.kwargs.get('reason', '')}" for mark in marks
            if mark.name == "skip" or (mark.name == "skipif" and any(mark.args))]


@pytest.mark.parametrize("name, command, outcome, module, test", OWN_TESTS, ids=[case[0] for case in OWN_TESTS])
def test_own_test_exists(name, command, outcome, module, test):
    """The row's test is one that pytest collects and does not skip here, that asserts, and that runs the row's
    command. Catches a row whose test was renamed or removed, that names a helper or a test of another command,
    or whose test is skipped on this machine or asserts nothing."""
    path = Path(__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text(), str(path))
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert test.startswith("test") and defined.count(test) == 1, (
        f"{path.name} has no test {test!r} that pytest collects (its tests: "
        f"{', '.join(name for name in defined if name.startswith('test'))})")
    nodes = code_of(tree, test)
    code = words_of(nodes)
    assert any(isinstance(node, ast.Assert) for node in nodes) or any(
        word.startswith(("assert", "raises")) for word in code), f"{test} asserts nothing"
    loaded = importlib.import_module(module)
    skipped = skip_marks(getattr(loaded, test), loaded)
    assert not skipped, f"{test} is skipped here ({'; '.join(skipped)}), so the row is not checked"
    missing = COMMAND_IN_CODE.get(command, set(command.split())) - code
    assert not missing, f"{test} does not run `{command}`: its code has no {', '.join(sorted(missing))}"
    OUTCOMES[name] = ("own", name, command, outcome, f"tests/{module}.py")


GROUPS = {"outputs": "Never write over an input; check outputs before the work",
          "dataset": "The dataset is checked before training (data/check.py)",
          "images": "Images are decoded in one place (data/images.py)",
          "options": "Options are checked before anything runs",
          "resume": "Checkpoints, weights files and resuming",
          "model": "Model inputs (checks.check_inputs, one host sync)",
          "own": "Faults and properties checked by their own test modules"}


def readable(pattern: str) -> str:
    """A case's regular expression as prose: N for a number, … for anything."""
    text = pattern.replace(r"\d+", "N").replace(".*", " … ").replace("\\", "").strip("^$")
    return re.sub(r" +", " ", text).replace("|", "/")


def render() -> str:
    lines = ["# Reliability catalogue", "",
             "Every bad input, fault and misuse we know of, and what happens. Written by",
             "`tests/test_reliability_catalogue.py`, which runs each case and checks its outcome: exit code 2 is a",
             "mistake in the call or the data, printed as one line (add `--debug` for the traceback); 0 is a run",
             "that went on, with a warning where one is shown. N stands for a number, … for any text.", "",
             f"{len(OUTCOMES)} cases; none ends in a traceback.", ""]
    for group, title in GROUPS.items():
        last = "checked by" if group == "own" else "the message says"
        lines += [f"## {title}", "", f"| what goes wrong | command | outcome | {last} |", "|---|---|---|---|"]
        lines += [f"| {name} | `{command}` | {outcome} | {readable(says)} |"
                  for row_group, name, command, outcome, says in OUTCOMES.values() if row_group == group]
        lines.append("")
    return "\n".join(lines)


def test_the_catalogue_page_is_current():
    expected = len(CASES) + len(MODEL_CASES) + len(OWN_TESTS) + 2
    if len(OUTCOMES) < expected:
        pytest.skip(f"only {len(OUTCOMES)} of {expected} cases ran (or passed)")
    page = render()
    if os.environ.get("MRCNN_WRITE_CATALOGUE") == "1":
        DOC.write_text(page)
    assert DOC.read_text() == page, ("docs/reliability.md is out of date: "
                                     "MRCNN_WRITE_CATALOGUE=1 pytest tests/test_reliability_catalogue.py writes it")
