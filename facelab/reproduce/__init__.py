"""Reproductions of the papers' result tables on SynthFaces (``facelab reproduce ...``)."""

from facelab.reproduce.liu2018 import liu_reference, reproduce_liu2018, results_markdown

__all__ = ["liu_reference", "reproduce_liu2018", "results_markdown"]
