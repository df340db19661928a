"""Reproductions of the papers' result tables on SynthFaces (``facelab reproduce ...``)."""

from facelab.reproduce.liu2018 import Liu2018Evaluable, reproduce_liu2018, results_markdown

__all__ = ["Liu2018Evaluable", "reproduce_liu2018", "results_markdown"]
