"""Teacher mode (`facelab.teach`, `facelab book student|check`) and the chapters' auto-checked exercises.

The expensive tests run every chapter's exercises twice (solutions, then student stubs): each
batch is one runner process that imports torch and facelab once and forks per exercise.
"""

import json
import os
from pathlib import Path

import pytest

from facelab.cli import main
from facelab.notebooks import dirty_cells
from facelab.teach import (
    BEGIN_MARKER,
    END_MARKER,
    SOLUTION_TOGGLE_TAG,
    Exercise,
    check_exercises,
    check_notebook,
    load_notebook,
    results_table,
    split_exercises,
    student_notebook,
    stub_solution,
    write_student,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
MIN_EXERCISES = 2  # per chapter
# A chapter whose check is cheap to run (camera + render imports only) for the CLI round trip.
CLI_CHAPTER = ROOT / "book" / "03_rendering.ipynb"


def _cell(kind, source, meta=None):
    cell = {"cell_type": kind, "metadata": meta or {}, "source": source}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _tiny_notebook(solution="def f():\n    # BEGIN SOLUTION\n    return 2\n    # END SOLUTION\n",
                   check="assert f() == 2\n", number=1):
    """A notebook with one exercise whose cells import nothing (checks in a fraction of a second)."""
    return {"cells": [_cell("markdown", "## Exercises"), _cell("markdown", "Write f."),
                      _cell("code", solution, {"tags": ["solution"], "facelab": {"exercise": number}}),
                      _cell("code", check, {"tags": ["check"], "facelab": {"check": number}})],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _write(path, nb):
    path.write_text(json.dumps(nb))
    return path


# ----------------------------------------------------------------------------- the chapters
def test_chapters_found():
    assert len(CHAPTERS) >= 8, CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_exercises_follow_the_format(path):
    nb = load_notebook(path)
    exercises = split_exercises(nb, str(path))
    assert len(exercises) >= MIN_EXERCISES, f"{path.name}: {len(exercises)} auto-checked exercises"
    assert [e.number for e in exercises] == list(range(1, len(exercises) + 1))
    heading = next(i for i, c in enumerate(nb["cells"])
                   if c["cell_type"] == "markdown" and "## Exercises" in "".join(c["source"]))
    for e in exercises:
        where = f"{path.name} exercise {e.number}"
        assert e.solution_cell > heading, f"{where}: before '## Exercises'"
        assert e.statement.strip(), f"{where}: no statement cell before the solution"
        assert e.check_cell == e.solution_cell + 1, f"{where}: the check cell must follow the solution cell"
        assert BEGIN_MARKER in e.solution and END_MARKER in e.solution, where
        assert "NotImplementedError" in stub_solution(e.solution, e.number, where)
        for idx, tag in ((e.solution_cell, "solution"), (e.check_cell, "check")):
            assert tag in nb["cells"][idx]["metadata"].get("tags", []), f"{where}: {tag} cell lacks the {tag!r} tag"
        # the built book folds each solution behind a toggle, so that a reader tries first
        assert SOLUTION_TOGGLE_TAG in nb["cells"][e.solution_cell]["metadata"]["tags"], f"{where}: solution not folded"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_version_shows_its_stubs(path):
    # the fold is for readers of the book; a student's own answer cell stays in view
    nb = load_notebook(path)
    student = student_notebook(nb, str(path))
    for e in split_exercises(student, str(path)):
        assert SOLUTION_TOGGLE_TAG not in student["cells"][e.solution_cell]["metadata"].get("tags", [])
    assert any(SOLUTION_TOGGLE_TAG in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), "teacher copy unchanged"


@pytest.fixture(scope="module")
def chapter_runs():
    """Every chapter exercise, run with its solution and with the student stub, in one batch
    (one runner process imports torch and facelab once for both)."""
    solved = [(p, e) for p in CHAPTERS for e in split_exercises(load_notebook(p), str(p))]
    # through the real conversion, as a student would get them
    stubbed = [e for p in CHAPTERS for e in split_exercises(student_notebook(load_notebook(p), str(p)), str(p))]
    assert [e.number for e in stubbed] == [e.number for _, e in solved]
    results = check_exercises([e for _, e in solved] + stubbed, jobs=2)
    labels = [f"{p.name} exercise {e.number}" for p, e in solved]
    return labels, results[: len(solved)], results[len(solved):]


def test_solutions_pass_their_checks(chapter_runs):
    labels, solutions, _ = chapter_runs
    assert [f"{label}: {r.error}" for label, r in zip(labels, solutions) if not r.passed] == []


def test_student_versions_fail_every_check(chapter_runs):
    # No check may pass on a stub, and each must fail *because* it reached the stub.
    labels, _, students = chapter_runs
    assert [label for label, r in zip(labels, students) if r.passed] == [], "checks that pass without a solution"
    assert [f"{label}: {r.error}" for label, r in zip(labels, students) if not r.error.startswith("NotImplementedError")] == []


# ----------------------------------------------------------------------------- the CLI
def test_cli_round_trip(tmp_path, capsys):
    out = tmp_path / "students"
    assert main(["book", "student", "--out", str(out), str(CLI_CHAPTER)]) == 0
    student = out / CLI_CHAPTER.name
    nb = json.loads(student.read_text())
    assert dirty_cells(nb) == []
    sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(BEGIN_MARKER in s for s in sources)
    n = len(split_exercises(nb))
    assert sum('raise NotImplementedError("Exercise' in s for s in sources) == n
    capsys.readouterr()

    assert main(["book", "check", str(student)]) == 1
    table = capsys.readouterr().out
    assert table.count(" FAIL ") == n and "PASS" not in table and f"0 of {n} exercises pass" in table

    assert main(["book", "check", str(CLI_CHAPTER)]) == 0
    table = capsys.readouterr().out
    assert table.count(" PASS ") == n and "FAIL" not in table


def test_cli_student_defaults_to_the_book(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["book", "student", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in CHAPTERS]
    assert json.loads(capsys.readouterr().out)["notebooks"] == [p.name for p in CHAPTERS]


def test_cli_check_against_the_original_checks(tmp_path, capsys):
    chapter = _write(tmp_path / "chapter.ipynb", _tiny_notebook())
    cheat = _tiny_notebook(solution="def f():\n    return 3\n", check="pass\n")  # wrong answer, emptied check
    answer = _write(tmp_path / "answer.ipynb", cheat)
    assert main(["book", "check", str(answer)]) == 0
    assert main(["book", "check", str(answer), "--against", str(chapter)]) == 1
    assert "AssertionError" in capsys.readouterr().out


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["book", "check", str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb" in capsys.readouterr().err
    for argv in (["book", "student", str(CLI_CHAPTER)], ["book", "check"]):  # no --out; no notebook
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


# ----------------------------------------------------------------------------- the library
def test_split_stub_and_student_roundtrip():
    nb = _tiny_notebook()
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    (ex,) = split_exercises(nb)
    assert (ex.number, ex.statement, ex.solution_cell, ex.check_cell) == (1, "Write f.", 2, 3)
    student = student_notebook(nb)
    assert nb["cells"][2]["outputs"], "the input notebook must not change"
    assert student["cells"][2]["outputs"] == []
    assert student["cells"][2]["source"] == 'def f():\n    raise NotImplementedError("Exercise 1: write your solution here")\n'
    assert student["cells"][3] == nb["cells"][3]


def test_stub_keeps_code_outside_the_markers():
    src = "import math\n\n\ndef f(x):\n    y = 1\n    # BEGIN SOLUTION\n    y = 2\n    # END SOLUTION\n    return x * y\n"
    assert stub_solution(src, 4) == ("import math\n\n\ndef f(x):\n    y = 1\n"
                                     '    raise NotImplementedError("Exercise 4: write your solution here")\n    return x * y\n')


def test_check_results_shape_and_errors():
    ok, wrong = Exercise(1, "", "x = 2", "assert x == 2", 0, 1), Exercise(2, "", "x = 1", "print('noise')\nassert x == 2, 'x is wrong'", 2, 3)
    results = check_exercises([ok, wrong])
    assert [(r.exercise, r.passed) for r in results] == [(1, True), (2, False)]
    assert results[1].error == "AssertionError: x is wrong [check cell, line 2: assert x == 2, 'x is wrong']"
    assert "Traceback" in results[1].traceback and results[0].error == ""
    assert "1 of 2 exercises pass" in results_table(results)


def test_each_exercise_runs_in_a_fresh_process():
    first = Exercise(1, "", "import sys\nsys.modules['__teach_probe__'] = 1\nleak = 1", "pass", 0, 1)
    second = Exercise(2, "", "import sys", "assert '__teach_probe__' not in sys.modules\nassert 'leak' not in dir()", 2, 3)
    assert [r.passed for r in check_exercises([first, second])] == [True, True]


def test_timeout_and_crash_are_failures():
    slow = Exercise(1, "", "while True:\n    pass", "pass", 0, 1)
    crash = Exercise(2, "", "import os\nos._exit(3)", "pass", 2, 3)
    killed = Exercise(3, "", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "pass", 4, 5)
    results = check_exercises([slow, crash, killed], timeout=1.0, jobs=2)
    assert not results[0].passed and results[0].error.startswith("TimeoutError")
    assert not results[1].passed and "exit status 3" in results[1].error
    assert not results[2].passed and "signal 9" in results[2].error


def test_without_fork_each_exercise_gets_an_interpreter(monkeypatch):
    monkeypatch.delattr(os, "fork")
    results = check_exercises([Exercise(1, "", "x = 2", "assert x == 2", 0, 1), Exercise(2, "", "x = 1", "assert x == 2", 2, 3)])
    assert [r.passed for r in results] == [True, False]


def test_write_student_refuses_to_overwrite_the_sources(tmp_path):
    src = _write(tmp_path / "ch.ipynb", _tiny_notebook())
    with pytest.raises(ValueError, match="out_dir.*overwrite"):
        write_student(src, tmp_path)
    assert write_student([src], tmp_path / "out") == [tmp_path / "out" / "ch.ipynb"]


def test_bad_input_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ipynb"):
        check_notebook(tmp_path / "nowhere.ipynb")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.ipynb: not valid notebook JSON"):
        check_notebook(broken)
    with pytest.raises(ValueError, match="no 'cells'"):
        load_notebook(_write(tmp_path / "list.ipynb", []))
    with pytest.raises(ValueError, match="no auto-checked exercises"):
        check_notebook(_write(tmp_path / "plain.ipynb", {"cells": [_cell("markdown", "hi")]}))

    unmarked = _tiny_notebook(solution="def f():\n    return 2\n")
    with pytest.raises(ValueError, match=r"ch.ipynb: exercise 1: the solution cell has no '# BEGIN SOLUTION'"):
        student_notebook(unmarked, "ch.ipynb")
    with pytest.raises(ValueError, match="without a closing"):
        stub_solution("# BEGIN SOLUTION\nx = 1\n", 1)
    with pytest.raises(ValueError, match="without a '# BEGIN SOLUTION'"):
        stub_solution("x = 1\n# END SOLUTION\n", 1)
    with pytest.raises(ValueError, match="inside another"):
        stub_solution("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", 1)

    no_check = _tiny_notebook()
    del no_check["cells"][3]
    with pytest.raises(ValueError, match="nb.ipynb: exercise 1 has a solution cell .* but no check cell"):
        split_exercises(no_check, "nb.ipynb")
    no_solution = _tiny_notebook()
    del no_solution["cells"][2]
    with pytest.raises(ValueError, match="exercise 1 has a check cell .* but no solution cell"):
        split_exercises(no_solution)
    twice = _tiny_notebook()
    twice["cells"].append(dict(twice["cells"][2]))
    with pytest.raises(ValueError, match="exercise 1 has two solution cells"):
        split_exercises(twice)
    untagged = _tiny_notebook()
    untagged["cells"][3]["metadata"] = {"tags": ["check"]}
    with pytest.raises(ValueError, match="tagged 'check' but has no metadata facelab.check"):
        split_exercises(untagged)
    with pytest.raises(ValueError, match="timeout"):
        check_exercises([], timeout=0)
    with pytest.raises(ValueError, match="jobs"):
        check_exercises([], jobs=0)
