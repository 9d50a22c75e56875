"""The study figures by name, with what each shows and what a study needs for it (no plotting imports, so the
CLI can list them cheaply)."""

FIGURE_HELP = {
    "headline": "teacher and student accuracy per teacher method and distillation method (mean ± std over seeds)",
    "trajectory": "teacher accuracy and training loss per epoch, and the student distilled from each checkpoint",
    "sweeps": "teacher and student accuracy against each swept hyper-parameter",
    "reliability": "reliability diagrams (15 bins) of the teachers and students, seeds pooled",
    "deviation": "per test example (--split train: training point), teacher vs student probability of the true "
                 "label, for every teacher method (--teacher: one)",
    "late-distillation": "student accuracy against the epoch where distillation starts (switch_epoch)",
    "scaling": "teacher distance to p* against the training-set size, log-log, with fitted slopes",
    "teacher-quality": "student accuracy against its teacher's accuracy and distance to p* (Spearman rho, CI)",
}

FIGURE_NEEDS = {
    "headline": "finished teacher runs (and their students) of the config's methods, in a study that is not a data "
                "sweep",
    "trajectory": "trajectory students: add `trajectory: {every: K}` to the study config and teacher.train.save_every "
                  "dividing K",
    "sweeps": "finished sweep variants: add `sweeps:` over a parameter other than switch_epoch to the study config",
    "reliability": "finished runs with saved test predictions (test_logits.npy, test_labels.npy)",
    "deviation": "a teacher method with distilled students and saved test predictions (--split train: their "
                 "checkpoints)",
    "late-distillation": "a student sweep over switch_epoch: add `sweeps: [{role: student, method: kd, param: "
                         "switch_epoch, values: [...]}]`",
    "scaling": "a data sweep over num_train on data with p* (mixed-feature): add `sweeps: [{role: data, param: "
               "num_train, values: [...]}]`",
    "teacher-quality": "at least 8 distilled students (of the trajectory's method, else kd) whose summaries record "
                       "their teachers' measures (teacher_top1, teacher_ece; teacher_pstar_l1_* on mixed-feature "
                       "data)",
}
