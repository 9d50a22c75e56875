"""Reproduction of published tables: the papers' numbers (``kdlab.reproduce.published``) and, later, the studies
that recompute them (``kdlab reproduce ID``)."""
