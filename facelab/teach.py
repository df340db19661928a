"""Teacher mode: student versions of the chapters and auto-checked exercises.

Book chapters end with ``## Exercises``. Each **auto-checked** exercise ``N`` there is three
cells in a row:

1. a markdown cell with the statement;
2. a **solution** code cell, metadata ``{"tags": ["solution", "hide-input"], "facelab": {"exercise": N}}``,
   whose answer sits between a ``# BEGIN SOLUTION`` and a ``# END SOLUTION`` line (code
   outside the markers, e.g. a ``def`` line and its docstring, is kept for the student);
   ``hide-input`` folds the solution behind a toggle in the built book, so that a reader
   tries first; the notebook itself (the teacher's copy) shows it, and the student version
   drops the tag, as its cell is the student's own work;
3. a **check** code cell, metadata ``{"tags": ["check"], "facelab": {"check": N}}``, that
   fails unless the solution is right, by comparing it with something independent (a
   closed form, a library function, a hand-worked value).

Solution and check cells are *self-contained*: they do their own imports (facelab, torch,
numpy) and build their own small inputs, never using chapter variables. That makes checking
cheap: :func:`check_notebook` runs, per exercise, the solution cell and then the check cell in a
fresh process, without running the chapter. The processes are forked from one runner that
has imported the exercises' modules once (``OMP_NUM_THREADS=1``), each with its own timeout;
where ``os.fork`` does not exist each exercise gets its own interpreter.

Open questions stay plain markdown. On the command line::

    facelab book student --out DIR [NOTEBOOKS...]   # stubbed copies, outputs stripped
    facelab book check ANSWER.ipynb                 # PASS/FAIL per exercise, exit 1 on any FAIL

Book chapters: every ``book/NN_*.ipynb``; README section "Teaching with facelab".
"""

from __future__ import annotations

import ast
import copy
import json
import linecache
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from facelab.notebooks import find_notebooks, strip_notebook

__all__ = [
    "SOLUTION_TOGGLE_TAG", "BEGIN_MARKER", "END_MARKER", "DEFAULT_TIMEOUT_S", "Exercise", "CheckResult", "load_notebook",
    "split_exercises", "stub_solution", "student_notebook", "write_student", "check_exercises",
    "check_notebook", "results_table",
]

#: tag that folds a solution cell's code behind a toggle in the built book (myst-nb)
SOLUTION_TOGGLE_TAG = "hide-input"
BEGIN_MARKER = "# BEGIN SOLUTION"
END_MARKER = "# END SOLUTION"
#: seconds one exercise (solution + check) may run before it counts as failed
DEFAULT_TIMEOUT_S = 60.0
#: seconds the runner may spend importing the exercises' modules before the first fork
PRELOAD_TIMEOUT_S = 120.0
#: how often the runner polls its children, s
POLL_S = 0.005
#: characters of an error kept in the one-line summary
MAX_ERROR_CHARS = 300
#: the runner prints its results on one line with this prefix (stdout may hold import noise)
RESULT_PREFIX = "FACELAB-TEACH-RESULTS "

_BEGIN_RE = re.compile(r"^(\s*)# BEGIN SOLUTION\b")
_END_RE = re.compile(r"^\s*# END SOLUTION\b")
# IPython-only lines (magics, shell escapes) cannot run under plain Python.
_IPYTHON_RE = re.compile(r"^\s*[%!]")


@dataclass
class Exercise:
    """One auto-checked exercise of a notebook.

    Attributes:
        number: the exercise id ``N`` (metadata ``facelab.exercise`` / ``facelab.check``).
        statement: source of the markdown cell just before the solution cell ("" if none).
        solution: source of the solution cell.
        check: source of the check cell.
        solution_cell, check_cell: cell indices in the notebook.
    """

    number: int
    statement: str
    solution: str
    check: str
    solution_cell: int
    check_cell: int


@dataclass
class CheckResult:
    """The outcome of one exercise's check.

    Attributes:
        exercise: the exercise id.
        passed: True when the solution cell and then the check cell ran without an error.
        error: one line: exception type, message and the failing cell line ("" if passed).
        seconds: wall time of the solution + check cells, s.
        traceback: the full traceback text ("" if passed).
    """

    exercise: int
    passed: bool
    error: str = ""
    seconds: float = 0.0
    traceback: str = ""


# ----------------------------------------------------------------------------- parsing
def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def load_notebook(path) -> dict:
    """Read a notebook, with errors that name the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or no ``cells`` list.

    >>> load_notebook("no/such.ipynb")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no/such.ipynb: no such notebook
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid notebook JSON ({err})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path}: not a notebook (no 'cells' list)")
    return nb


def _exercise_id(cell: dict, key: str, name: str, index: int):
    meta = cell.get("metadata", {}).get("facelab", {})
    value = meta.get(key) if isinstance(meta, dict) else None
    tag = "solution" if key == "exercise" else "check"
    tagged = tag in cell.get("metadata", {}).get("tags", [])
    if value is None:
        if tagged:
            raise ValueError(f"{name}: cell {index} is tagged {tag!r} but has no metadata facelab.{key} (the exercise number)")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: cell {index}: facelab.{key} must be an exercise number >= 1, got {value!r}")
    if cell.get("cell_type") != "code":
        raise ValueError(f"{name}: exercise {value}: the {tag} cell (cell {index}) must be a code cell")
    return value


def split_exercises(nb: dict, name: str = "notebook") -> list[Exercise]:
    """The auto-checked exercises of a notebook, in order of their solution cells.

    Args:
        nb: the notebook (``json.load`` of an ``.ipynb``).
        name: how errors refer to the notebook (e.g. its path).

    Returns:
        one :class:`Exercise` per solution cell.

    Raises:
        ValueError: a solution without a check cell (or the reverse), an exercise number
            used twice, a tag without an exercise number, a non-code solution/check cell.

    >>> code = lambda src, meta: {"cell_type": "code", "source": src, "metadata": meta}
    >>> nb = {"cells": [{"cell_type": "markdown", "source": "Write f.", "metadata": {}},
    ...                 code("def f():\\n    # BEGIN SOLUTION\\n    return 1\\n    # END SOLUTION\\n",
    ...                      {"tags": ["solution"], "facelab": {"exercise": 1}}),
    ...                 code("assert f() == 1", {"tags": ["check"], "facelab": {"check": 1}})]}
    >>> [(e.number, e.statement, e.check) for e in split_exercises(nb)]
    [(1, 'Write f.', 'assert f() == 1')]
    """
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{name}: not a notebook (no 'cells' list)")
    solutions: dict[int, int] = {}
    checks: dict[int, int] = {}
    for i, cell in enumerate(nb["cells"]):
        for key, found in (("exercise", solutions), ("check", checks)):
            number = _exercise_id(cell, key, name, i)
            if number is None:
                continue
            if number in found:
                kind = "solution" if key == "exercise" else "check"
                raise ValueError(f"{name}: exercise {number} has two {kind} cells (cells {found[number]} and {i})")
            found[number] = i
    for number in solutions:
        if number not in checks:
            raise ValueError(f"{name}: exercise {number} has a solution cell (cell {solutions[number]}) "
                             f"but no check cell (metadata facelab.check = {number})")
    for number in checks:
        if number not in solutions:
            raise ValueError(f"{name}: exercise {number} has a check cell (cell {checks[number]}) "
                             f"but no solution cell (metadata facelab.exercise = {number})")
    out = []
    for number, i in sorted(solutions.items(), key=lambda kv: kv[1]):
        j = checks[number]
        if j < i:
            raise ValueError(f"{name}: exercise {number}: the check cell (cell {j}) comes before its solution cell (cell {i})")
        statement = ""
        if i > 0 and nb["cells"][i - 1].get("cell_type") == "markdown":
            statement = _source(nb["cells"][i - 1])
        out.append(Exercise(number, statement, _source(nb["cells"][i]), _source(nb["cells"][j]), i, j))
    return out


def stub_solution(source: str, number: int, name: str = "notebook") -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by a ``raise``.

    The ``raise NotImplementedError("Exercise N: ...")`` line takes the indentation of the
    ``# BEGIN SOLUTION`` line; everything outside the markers is kept.

    Raises:
        ValueError: no marker block, or unbalanced markers (names ``name`` and ``number``).

    >>> src = "def f(x):\\n    '''Twice x.'''\\n    # BEGIN SOLUTION\\n    return 2 * x\\n    # END SOLUTION\\n"
    >>> print(stub_solution(src, 3))
    def f(x):
        '''Twice x.'''
        raise NotImplementedError("Exercise 3: write your solution here")
    <BLANKLINE>
    """
    out, inside, blocks = [], False, 0
    lines = source.splitlines(keepends=True)
    for k, line in enumerate(lines, 1):
        begin, end = _BEGIN_RE.match(line), _END_RE.match(line)
        if begin:
            if inside:
                raise ValueError(f"{name}: exercise {number}: '{BEGIN_MARKER}' on line {k} inside another solution block")
            inside, blocks = True, blocks + 1
            newline = "\n" if line.endswith("\n") else ""
            out.append(f'{begin.group(1)}raise NotImplementedError("Exercise {number}: write your solution here"){newline}')
        elif end:
            if not inside:
                raise ValueError(f"{name}: exercise {number}: '{END_MARKER}' on line {k} without a '{BEGIN_MARKER}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: exercise {number}: '{BEGIN_MARKER}' without a closing '{END_MARKER}'")
    if blocks == 0:
        raise ValueError(f"{name}: exercise {number}: the solution cell has no '{BEGIN_MARKER}' ... '{END_MARKER}' block")
    return "".join(out)


def student_notebook(nb: dict, name: str = "notebook") -> dict:
    """The student version of a chapter: outputs stripped, solutions stubbed, checks kept.

    Returns a new notebook; ``nb`` is not changed.

    Raises:
        ValueError: as :func:`split_exercises`, or a solution cell without markers.

    >>> nb = {"cells": [{"cell_type": "code", "source": "# BEGIN SOLUTION\\nx = 1\\n# END SOLUTION\\n",
    ...                  "metadata": {"tags": ["solution", "hide-input"], "facelab": {"exercise": 1}},
    ...                  "outputs": [], "execution_count": 4},
    ...                 {"cell_type": "code", "source": "assert x == 1", "outputs": [], "execution_count": 5,
    ...                  "metadata": {"tags": ["check"], "facelab": {"check": 1}}}]}
    >>> s = student_notebook(nb)
    >>> s["cells"][0]["source"], s["cells"][0]["execution_count"]
    ('raise NotImplementedError("Exercise 1: write your solution here")\\n', None)
    >>> s["cells"][0]["metadata"]["tags"], nb["cells"][0]["metadata"]["tags"]
    (['solution'], ['solution', 'hide-input'])
    """
    exercises = split_exercises(nb, name)
    out = strip_notebook(copy.deepcopy(nb))
    for ex in exercises:
        cell = out["cells"][ex.solution_cell]
        cell["source"] = stub_solution(ex.solution, ex.number, name)
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TOGGLE_TAG in tags:  # the student's answer is not hidden from the student
            tags.remove(SOLUTION_TOGGLE_TAG)
    return out


def _write_notebook(nb: dict, path: Path) -> None:
    # The same layout as `python -m facelab.notebooks strip`, so diffs stay small.
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_student(sources, out_dir) -> list[Path]:
    """Write the student version of every notebook in ``sources`` to ``out_dir``.

    Args:
        sources: a notebook, a folder of notebooks (e.g. ``book``), or a list of them.
        out_dir: the output folder (created); it must not hold any of the sources.

    Returns:
        the written paths, one per notebook, with the source file names.

    Raises:
        FileNotFoundError: a source does not exist. ValueError: a bad notebook (see
        :func:`student_notebook`), no notebooks at all, two sources with one file name, or
        ``out_dir`` holding a source (the solutions would be overwritten).
    """
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    paths: list[Path] = []
    for item in items:
        found = find_notebooks(item)
        if Path(item).is_file() and Path(item).suffix != ".ipynb":
            raise ValueError(f"{item}: not an .ipynb notebook")
        paths.extend(found)
    if not paths:
        raise ValueError(f"sources: no notebooks found in {[str(i) for i in items]}")
    out = Path(out_dir)
    names: dict[str, Path] = {}
    for p in paths:
        if p.resolve().parent == out.resolve():
            raise ValueError(f"out_dir: {out} holds the source {p}; the student version would overwrite its solutions")
        if p.name in names and names[p.name].resolve() != p.resolve():
            raise ValueError(f"sources: {names[p.name]} and {p} would both be written as {out / p.name}")
        names[p.name] = p
    students = [(p, student_notebook(load_notebook(p), str(p))) for p in names.values()]  # all checked before writing
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p, nb in students:
        _write_notebook(nb, out / p.name)
        written.append(out / p.name)
    return written


# ----------------------------------------------------------------------------- checking
def _imported_modules(sources: list[str]) -> list[str]:
    """Absolute module names imported anywhere in ``sources`` (for the runner to preload)."""
    names: list[str] = []
    for src in sources:
        try:
            tree = ast.parse(_plain_python(src))
        except SyntaxError:
            continue  # reported when the cell runs
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
    return list(dict.fromkeys(names))


def _plain_python(source: str) -> str:
    return "".join("# " + line if _IPYTHON_RE.match(line) else line for line in source.splitlines(keepends=True))


def _short_error(err: BaseException, tb, sources: dict[str, str]) -> str:
    lines = str(err).strip().splitlines()
    msg = type(err).__name__ + (f": {lines[0]}" if lines else "")
    # torch.testing.assert_close puts the size of the mismatch on a later line
    msg += "".join(f"; {ln.strip()}" for ln in lines[1:] if ln.strip().startswith("Greatest absolute difference"))
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith("<exercise ")]
    if frames and not isinstance(err, NotImplementedError):  # an unanswered exercise needs no location
        frame = frames[-1]
        part = frame.filename.rstrip(">").rsplit(" ", 1)[-1]
        code = sources[part].splitlines()
        where = code[frame.lineno - 1].strip() if 0 < frame.lineno <= len(code) else ""
        msg += f" [{part} cell, line {frame.lineno}: {where}]"
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 3] + "..."


def _execute(item: dict) -> dict:
    """Run one exercise's solution and check sources in a fresh namespace (in this process)."""
    namespace = {"__name__": "__main__"}
    sources = {"solution": _plain_python(item["solution"]), "check": _plain_python(item["check"])}
    start = time.perf_counter()
    try:
        for part in ("solution", "check"):
            filename = f"<exercise {item['number']} {part}>"
            linecache.cache[filename] = (len(sources[part]), None, sources[part].splitlines(True), filename)
            exec(compile(sources[part], filename, "exec"), namespace)
    except BaseException as err:  # noqa: BLE001 - a student's SystemExit or KeyboardInterrupt is a failure too
        return {"passed": False, "error": _short_error(err, err.__traceback__, sources),
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - start}
    return {"passed": True, "error": "", "traceback": "", "seconds": time.perf_counter() - start}


def _run_forked(items: list[dict], timeout: float, jobs: int) -> list[dict]:
    """Each item in its own forked child, at most ``jobs`` at a time, killed after ``timeout`` s."""
    import signal

    results: list[dict | None] = [None] * len(items)
    pending = list(range(len(items)))
    running: dict[int, tuple[int, Path, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="facelab-teach-") as tmp:
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop(0)
                out_file = Path(tmp) / f"{i}.json"
                pid = os.fork()
                if pid == 0:  # the child: run, write the result, leave without cleanup
                    code = 0
                    try:
                        devnull = os.open(os.devnull, os.O_WRONLY)
                        os.dup2(devnull, 1)
                        os.dup2(devnull, 2)
                        partial = out_file.with_suffix(".part")  # renamed when complete: never half read
                        partial.write_text(json.dumps(_execute(items[i])))
                        os.replace(partial, out_file)
                    except BaseException:  # noqa: BLE001
                        code = 1
                    os._exit(code)
                now = time.monotonic()
                running[pid] = (i, out_file, now + timeout, now)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for cpid, (i, _, deadline, start) in list(running.items()):
                    if now > deadline:
                        os.kill(cpid, signal.SIGKILL)
                        os.waitpid(cpid, 0)
                        del running[cpid]
                        results[i] = {"passed": False, "error": f"TimeoutError: took longer than {timeout:g} s",
                                      "traceback": "", "seconds": now - start}
                time.sleep(POLL_S)
                continue
            if pid not in running:
                continue
            i, out_file, _, start = running.pop(pid)
            if out_file.exists():
                results[i] = json.loads(out_file.read_text())
            else:
                how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
                results[i] = {"passed": False, "error": f"the exercise's process died ({how})", "traceback": "",
                              "seconds": time.monotonic() - start}
    return results  # type: ignore[return-value]


def _serve() -> None:
    """The runner: a JSON job on stdin, one JSON result line on stdout."""
    job = json.loads(sys.stdin.read())
    items = job["items"]
    if job["fork"]:
        import importlib

        for module in _imported_modules([s for it in items for s in (it["solution"], it["check"])]):
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the exercise itself reports a failing import
                pass
        torch = sys.modules.get("torch")
        if torch is not None:  # one thread per forked exercise (and no torch import if nobody needs it)
            torch.set_num_threads(1)
        results = _run_forked(items, job["timeout"], job["jobs"])
    else:
        results = [_execute(item) for item in items]
    sys.stdout.write(RESULT_PREFIX + json.dumps(results) + "\n")
    sys.stdout.flush()


_RUNNER = "from facelab.teach import _serve; _serve()"


def _run_batch(items: list[dict], timeout: float, jobs: int, fork: bool, cwd, env) -> list[dict]:
    job = json.dumps({"items": items, "timeout": timeout, "jobs": jobs, "fork": fork})
    limit = timeout * math.ceil(len(items) / jobs) + PRELOAD_TIMEOUT_S
    try:
        proc = subprocess.run([sys.executable, "-c", _RUNNER], input=job, capture_output=True, text=True,
                              timeout=limit, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        return [{"passed": False, "error": f"TimeoutError: the checker took longer than {limit:g} s",
                 "traceback": "", "seconds": limit} for _ in items]
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
    raise RuntimeError(f"the exercise checker failed (exit status {proc.returncode}):\n{tail}")


def check_exercises(exercises: list[Exercise], timeout: float = DEFAULT_TIMEOUT_S, jobs: int = 1,
                    cwd=None) -> list[CheckResult]:
    """Run each exercise's solution then check cell in a fresh process.

    Args:
        exercises: from :func:`split_exercises` (of one or several notebooks).
        timeout: seconds per exercise, > 0.
        jobs: exercises run at once (each with one thread), >= 1.
        cwd: working folder of the exercises (default: the current one).

    Returns:
        one :class:`CheckResult` per exercise, in order.

    >>> ex = Exercise(1, "", "x = 2", "assert x == 2", 0, 1)
    >>> [(r.exercise, r.passed) for r in check_exercises([ex, Exercise(2, "", "x = 1", "assert x == 2", 2, 3)])]
    [(1, True), (2, False)]
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an int >= 1, got {jobs!r}")
    items = [{"number": e.number, "solution": e.solution, "check": e.check} for e in exercises]
    if not items:
        return []
    # The child processes must import this very facelab, and stay on one thread each.
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p))
    if hasattr(os, "fork"):
        raw = _run_batch(items, float(timeout), jobs, True, cwd, env)
    else:  # no fork (Windows): one interpreter per exercise
        raw = [r for item in items for r in _run_batch([item], float(timeout), 1, False, cwd, env)]
    return [CheckResult(e.number, bool(r["passed"]), r["error"], float(r["seconds"]), r["traceback"])
            for e, r in zip(exercises, raw)]


def check_notebook(path, timeout: float = DEFAULT_TIMEOUT_S, jobs: int = 1, checks_from=None) -> list[CheckResult]:
    """Check every auto-checked exercise of an (answered) notebook.

    Args:
        path: the notebook, e.g. a student's answers or a chapter (whose solutions must pass).
        timeout: seconds per exercise.
        jobs: exercises run at once.
        checks_from: optional notebook (e.g. the original chapter) whose check cells are used
            instead of ``path``'s own, so that an edited check cell changes nothing.

    Returns:
        one :class:`CheckResult` per exercise, in notebook order.

    Raises:
        FileNotFoundError, ValueError: a missing or broken notebook (named), a notebook without
        auto-checked exercises, or ``checks_from`` lacking one of ``path``'s exercises.
    """
    path = Path(path)
    exercises = split_exercises(load_notebook(path), str(path))
    if not exercises:
        raise ValueError(f"{path}: no auto-checked exercises (cells with metadata facelab.exercise)")
    if checks_from is not None:
        reference = {e.number: e.check for e in split_exercises(load_notebook(checks_from), str(checks_from))}
        missing = [e.number for e in exercises if e.number not in reference]
        if missing:
            raise ValueError(f"checks_from: {checks_from} has no check cell for exercises {missing} of {path}")
        for e in exercises:
            e.check = reference[e.number]
    return check_exercises(exercises, timeout=timeout, jobs=jobs, cwd=path.resolve().parent)


def results_table(results: list[CheckResult]) -> str:
    """A plain-text PASS/FAIL table, one row per exercise, and a count.

    >>> print(results_table([CheckResult(1, True, seconds=0.2), CheckResult(2, False, "ValueError: no", 0.1)]))
    exercise  result  seconds  detail
           1  PASS        0.2
           2  FAIL        0.1  ValueError: no
    1 of 2 exercises pass
    """
    rows = ["exercise  result  seconds  detail"]
    for r in results:
        rows.append(f"{r.exercise:>8}  {'PASS' if r.passed else 'FAIL':<6}  {r.seconds:>7.1f}  {r.error}".rstrip())
    rows.append(f"{sum(r.passed for r in results)} of {len(results)} exercises pass")
    return "\n".join(rows)
