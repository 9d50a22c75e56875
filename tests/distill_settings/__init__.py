"""Test settings of every registered distillation method, one module per group of methods.

Each module defines ``SETTINGS = {method name: {"params": {...}, "skip_pairs": [...]}}``; the test harness in
``tests/methods/test_distill_methods.py`` merges them and fails for a registered method without settings.
"""
