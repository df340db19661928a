"""The README's results tables are the committed runs' results, not numbers typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facelab.reproduce.artifacts import ARTIFACTS_DIR, has_artifact, load_results
from facelab.reproduce.liu2018 import claims_markdown, rows_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not has_artifact("liu2018-standard"), reason="no committed liu2018-standard run")
def test_readme_liu_tables_are_the_standard_runs():
    result = load_results("liu2018-standard")
    text = README.read_text()
    assert claims_markdown(result["claims"]) in text, "README: the Liu et al. claims table differs from results.json"
    assert rows_markdown(result) in text, "README: the Liu et al. rows table differs from results.json"


@pytest.mark.skipif(not has_artifact("gao2020-quick"), reason="no committed gao2020-quick run")
def test_readme_gao_tables_are_the_quick_runs():
    from facelab.reproduce.gao2020 import results_markdown

    assert results_markdown(load_results("gao2020-quick")) in README.read_text(), \
        "README: the Gao et al. tables differ from book/artifacts/gao2020-quick/results.json"


@pytest.mark.skipif(not has_artifact("gao2020-standard"), reason="no committed gao2020-standard run")
def test_readme_gao_standard_tables_and_claims_are_the_committed_run():
    from facelab.metrics.stats import describe_claim, format_difference
    from facelab.reproduce.gao2020 import PILOT_SCORES, results_markdown

    result, text = load_results("gao2020-standard"), README.read_text()
    assert results_markdown(result) in text, "README: the Gao et al. standard tables differ from its results.json"
    claims = {c["id"]: c for c in result["claims"]}
    for claim_id in ("T0", "T1", "G4"):  # the sentences quoted under the tables
        assert describe_claim(claims[claim_id]).rstrip(".") in text, f"README: claim {claim_id} differs from results.json"
    held = ARTIFACTS_DIR / "gao2020-standard" / "heldout" / "results.json"
    if held.is_file():  # the held-out re-score quoted after them
        for c in json.loads(held.read_text())["claims"]:
            if c["id"] in claims:  # every claim the held-out suite re-scores
                assert describe_claim(c).replace("**", "").rstrip(".") in text, f"README: held-out {c['id']} differs from heldout/results.json"
    for e in result["dose_response"]:  # the dose-response sentences
        assert f"{e['id']}: {format_difference(e['estimate'], e['metric'])}" in text, f"README: dose {e['id']} differs"
    pilots = ARTIFACTS_DIR / "gao2020-standard" / PILOT_SCORES
    if pilots.is_file():  # the pilots quoted under "How this design was found"
        from facelab.reproduce.gao2020 import describe_pilot

        scores = json.loads(pilots.read_text())
        cells = result["table1"]["average_over_identity"]["Mean face (no reconstruction)"].values()
        mean_face = sum(c["mean"] for c in cells) / len(cells)
        for name in ("earlier/full", "lp500x8_3600", "lp64000x1_3600", "full_lp64000x1_3600_ncritic1"):
            assert describe_pilot(name, scores, mean_face) in text, f"README: pilot {name} differs from {PILOT_SCORES}"


@pytest.mark.skipif(not has_artifact("sir-quick"), reason="no committed sir-quick run")
def test_readme_sir_tables_are_the_quick_runs():
    from facelab.reproduce.sir import results_markdown

    tables = results_markdown(load_results("sir-quick")).split("\n", 1)[1].strip()  # without its title
    assert tables in README.read_text(), "README: the SIR tables differ from book/artifacts/sir-quick/results.json"


@pytest.mark.skipif(not has_artifact("sir-standard"), reason="no committed sir-standard run")
def test_readme_sir_standard_tables_and_claims_are_the_committed_run():
    from facelab.metrics.stats import describe_claim
    from facelab.reproduce.sir import results_markdown

    result, text = load_results("sir-standard"), README.read_text()
    tables = results_markdown(result).split("\n", 1)[1].strip()  # without its title
    assert tables in text, "README: the SIR standard tables differ from book/artifacts/sir-standard/results.json"
    for c in result["claims"]:
        if c["id"] in ("S1", "S2", "S3", "S3b", "S4"):  # the sentences quoted under the tables
            assert describe_claim(c) in text, f"README: SIR claim {c['id']} differs from results.json"
    pre = result["precondition"]
    assert f"{pre['micc_over_mean_face']:.2f} x the mean face" in text, "README: the SIR precondition differs"
    from facelab.reproduce.sir import describe_pilot

    for name in ("pilot9k", "pilot18k"):  # the longer base stages quoted after the precondition
        pilot = ARTIFACTS_DIR / "sir-standard" / "tuning" / name / "results.json"
        assert describe_pilot(name, json.loads(pilot.read_text())) in text, f"README: SIR {name} differs from its results.json"


def test_the_check_catches_an_edited_number():
    result = {"claims": [{"id": "L2", "text": "t", "rows": ["a", "b"], "metric": "micc_mm", "estimate": -0.1,
                          "ci95": [-0.2, 0.0], "n_subjects": 30, "n_seeds": 3, "verdict": "within noise"}]}
    table = claims_markdown(result["claims"])
    assert table.replace("-0.1000", "-0.1001") != table
