"""The progress line, on hand-made trials (no Ray run needed)."""

import io
from types import SimpleNamespace

from vgtune.driver.progress import ProgressLine, summary_line


def _trial(status, epoch=0, epochs=4, result_status="running", val=None):
    last = {"epoch": epoch, "status": result_status} | ({"val_acc": val} if val is not None else {})
    return SimpleNamespace(status=status, last_result=last, config={"trial": {"train": {"epochs": epochs}}})


TRIALS = [_trial("TERMINATED", 4, result_status="completed", val=0.91),
          _trial("TERMINATED", 2, val=0.12),  # ended before its last epoch: stopped
          _trial("TERMINATED", 1, result_status="diverged", val=0.05),
          _trial("ERROR"), _trial("RUNNING", 1, val=0.95), _trial("PENDING")]


def test_the_line_counts_by_status_and_estimates_the_rest():
    line = summary_line(TRIALS, total=10, elapsed=40.0, metric="val_acc", mode="max")
    assert line == ("4/10 trials done (1 completed, 1 stopped, 1 diverged, 1 error) · 1 running · 0:40 elapsed"
                    " · ETA 1:00 · best val_acc 0.950")


def test_nothing_done_yet_has_no_eta():
    assert "ETA ?" in summary_line([_trial("PENDING")], 3, 5.0, "val_acc", "max")


def test_a_log_gets_plain_lines_at_most_every_interval():
    out = io.StringIO()
    progress = ProgressLine(total=10, metric="train_loss", mode="min", every=3600, stream=out)
    assert progress.should_report(TRIALS)
    progress.report(TRIALS, done=False)
    assert not progress.should_report(TRIALS) and progress.should_report(TRIALS, done=True)
    progress.report(TRIALS, done=True)
    assert out.getvalue().count("\n") == 2 and "\r" not in out.getvalue()
