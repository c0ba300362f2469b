"""The one list of metric and column names: what a trial measures, logs and the trials table holds.

Every other list of names derives from these (the MLflow logger's epoch
metrics, the reader's result metrics, the trials-table order, the metrics the
spec may select on). Adding a result column means adding it here and to the
code that computes it. Imports nothing (no torch): the spec and the report use it.

The trials table (`trials.csv`) is, in this order: `CONTRACT_FACTORS`,
`RESULTS`, `PROFILE`, `THEORY`, `ARM_TABLE`, `CHANCE`, every other
`TrainConfig` field (`vgtune.core.schema.FACTORS`), then `sweep`.
"""

from __future__ import annotations

# ------------------------------------------------------------------ one probe

# Per-block series of one probe (vgtune.core.gradflow.GradFlowProbe), logged as `blockNN/<series>`.
SERIES = ("grad_norm", "weight_grad_norm", "update_ratio", "act_mean", "act_std", "dead_frac", "saturated_frac")
# Where the gradient is lost (vgtune.core.gradflow.profile): the block of the worst drop, its decades, the mean rate.
PROFILE = ("worst_drop_block", "worst_drop_decades", "decades_per_block")
# A probe's scalars (vgtune.core.gradflow.summarize): attenuation, mean dead / saturated shares, the end norms.
PROBE_SCALARS = ("grad_attenuation", "dead_frac", "saturated_frac", "grad_norm_first", "grad_norm_last")

# ------------------------------------------------------------------ one epoch

# The score a diverged trial gets: each split's majority-class share (test, validation).
CHANCE = ("chance_acc", "chance_val_acc")
CHANCE_OF = {"test_acc": "chance_acc", "val_acc": "chance_val_acc"}  # accuracy -> its chance rate
TIMES = ("train_seconds", "eval_seconds")  # cumulative seconds inside the training loops / evaluation passes
# Every epoch's metrics (an EpochReport's `metrics`), logged at step = epoch.
EPOCH_METRICS = ("train_loss", "train_acc", "val_acc", "test_acc") + CHANCE + PROBE_SCALARS + TIMES + PROFILE
# What a spec's `metric` may choose settings or drive a scheduler on: never test data.
SELECTION_METRICS = ("val_acc", "train_acc", "train_loss", "grad_attenuation")
TEST_METRICS = ("test_acc", "test_loss")  # test data: reported, never selected on

# ------------------------------------------------------------------ one trial

# The mean-field prediction beside the measurement (vgtune.core.theory), logged at step 0.
THEORY_METRICS = ("chi1", "depth_scale", "grad_attenuation_predicted")
THEORY = THEORY_METRICS + ("theory",)  # `theory`: "mean field", or why a prediction is empty (a tag)
RESULT_TAGS = ("status", "diagnosis")  # MLflow tags of a trial run
# The result columns of the trials table; all but the tags and the run id are MLflow metrics.
RESULTS = RESULT_TAGS + ("test_acc", "val_acc", "train_loss", "grad_attenuation_init", "grad_attenuation_final",
                         "train_seconds", "epochs_run", "mlflow_run_id")
# The metrics the reader takes from a trial run.
RESULT_METRICS = (tuple(c for c in RESULTS if c not in RESULT_TAGS + ("mlflow_run_id",)) + THEORY_METRICS
                  + CHANCE + PROFILE)
# The options every trials table leads with (all TrainConfig fields).
CONTRACT_FACTORS = ("depth", "width", "activation", "init", "norm", "residual", "optimizer", "lr", "seed", "dataset")

# ------------------------------------------------------------------ fair comparisons (vgtune.analysis.fairness)

# A trial's arm (a stable id of its scientific factors), its nuisance setting (`lr=0.02`), its spec variant,
# stage (select: chooses each arm's setting | confirm: fresh seeds, the report's evidence) and look (the
# confirmation look its seed belongs to: 1, 2, ...; empty in selection): MLflow tags.
ARM_COLUMNS = ("arm", "nuisance", "variant", "stage", "look")
SELECTED = "selected"  # True on the rows of each arm's chosen setting (computed by the report)
ARM_TABLE = ARM_COLUMNS[:2] + (SELECTED,) + ARM_COLUMNS[2:]  # the trials table's order
SWEEP = "sweep"  # the sweep run folder a trial belongs to
STOP_REASON = "stop_reason"  # why a stopped trial stopped (gradient collapse, or a scheduler: part of its budget)

# The trials table's columns before the remaining TrainConfig fields.
TRIALS_HEAD = CONTRACT_FACTORS + RESULTS + PROFILE + THEORY + ARM_TABLE + CHANCE + (STOP_REASON,)

__all__ = ["SERIES", "PROFILE", "PROBE_SCALARS", "CHANCE", "CHANCE_OF", "TIMES", "EPOCH_METRICS",
           "SELECTION_METRICS", "TEST_METRICS", "THEORY_METRICS", "THEORY", "RESULT_TAGS", "RESULTS",
           "RESULT_METRICS", "CONTRACT_FACTORS", "ARM_COLUMNS", "SELECTED", "ARM_TABLE", "SWEEP", "STOP_REASON",
           "TRIALS_HEAD"]
