"""kdlab: student-oriented teacher training and knowledge distillation in PyTorch.

Python API (each takes a config object, a mapping or a YAML path, plus optional dotted overrides)::

    import kdlab
    teacher = kdlab.train_teacher("configs/digits/teacher.yaml")
    student = kdlab.distill({"data": "digits", "student": "resnet8", "teacher": {"path": teacher.run_dir}})
    table = kdlab.run_study("configs/quickstart.yaml", overrides=["seeds=[0]"])
"""

__version__ = "0.1.0"

from .api import distill, evaluate, run_study, train_teacher  # noqa: E402

__all__ = ["__version__", "distill", "evaluate", "run_study", "train_teacher"]
