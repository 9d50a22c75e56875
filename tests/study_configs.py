"""Tiny study configs and what the study tests compare of their runs."""

from pathlib import Path

from conftest import TINY_DATA, TINY_TRAIN


def study_cfg(out, seeds=(0, 1)):
    return {
        "name": "tiny", "out_dir": str(out), "seeds": list(seeds), "data": dict(TINY_DATA),
        "teacher": {"model": "resnet8", "methods": {"standard": "standard", "wd0": "standard"},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
        "student": {"model": {"name": "mlp", "hidden": [16]},
                    "methods": {"alone": "none", "kd": "kd", "kdT2": {"name": "kd", "T": 2}},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
    }


def teacher_and_students(out, student_model=None) -> dict:
    """One teacher; a student trained alone and one distilled (KD), for the launcher tests."""
    student = student_model or {"name": "mlp", "hidden": [16]}
    return {"name": "sl", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": {"standard": "standard"}, "train": dict(TINY_TRAIN)},
            "student": {"model": student, "methods": {"alone": "none", "kd": "kd"},
                        "train": {**TINY_TRAIN, "epochs": 3}}}


def run_dirs(out) -> dict:
    """A study's run folders by their path in it."""
    return {str(p.parent.relative_to(out)): p.parent for p in Path(out).rglob("checkpoints")}


def same_weights(a, b) -> bool:
    """Whether two run folders' last checkpoints hold bit-identical weights."""
    import torch

    wa, wb = (torch.load(Path(d) / "checkpoints" / "last.pt", weights_only=False)["model_state"] for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
