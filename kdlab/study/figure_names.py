"""The study figures by name, with what each shows and what a study needs for it (no plotting imports, so the
CLI can list them cheaply)."""

FIGURE_HELP = {
    "trajectory": "teacher accuracy and training loss per epoch, and the student distilled from each checkpoint",
    "sweeps": "teacher and student accuracy against each swept hyper-parameter",
    "reliability": "reliability diagrams (15 bins) of the teachers and students, seeds pooled",
    "deviation": "per test example, teacher vs student probability of the true label",
    "late-distillation": "student accuracy against the epoch where distillation starts (switch_epoch)",
}

FIGURE_NEEDS = {
    "trajectory": "trajectory students: add `trajectory: {every: K}` to the study config and teacher.train.save_every "
                  "dividing K",
    "sweeps": "finished sweep variants: add `sweeps:` over a parameter other than switch_epoch to the study config",
    "reliability": "finished runs with saved test predictions (test_logits.npy, test_labels.npy)",
    "deviation": "a teacher method with distilled students and saved test predictions",
    "late-distillation": "a student sweep over switch_epoch: add `sweeps: [{role: student, method: kd, param: "
                         "switch_epoch, values: [...]}]`",
}
