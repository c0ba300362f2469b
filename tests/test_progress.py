"""The progress line, on hand-made trials (no Ray run needed)."""

import io
from types import SimpleNamespace

from vgtune.core.member import MemberEpoch, TrialEpoch
from vgtune.driver.progress import ProgressLine, summary_line


def _epoch(k, epoch, status="running", val=None, stop_reason=None):
    row = {"epoch": epoch, "status": status} | ({"val_acc": val} if val is not None else {})
    return MemberEpoch(k, row, stop_reason=stop_reason)


def _trial(status, epoch=0, result_status="running", val=None):
    """A Tune trial of one trial alone; epoch 0: none reported yet."""
    latest = [_epoch(0, epoch, result_status, val)] if epoch else [None]
    last = TrialEpoch([], latest).to_result("val_acc", "max")
    return SimpleNamespace(trial_id="t", status=status, last_result=last,
                           config={"trial": {"train": {"epochs": 4}, "meta": {}}})


def _pack(status, latest):
    """A Tune trial of a pack, each member's latest epoch in `latest`."""
    item = {"train": {"epochs": 4}, "meta": {}, "members": [{"train": {"epochs": 4}, "meta": {}} for _ in latest]}
    return SimpleNamespace(trial_id="p", status=status, last_result=TrialEpoch([], latest).to_result("val_acc", "max"),
                           config={"trial": item})


TRIALS = [_trial("TERMINATED", 4, result_status="completed", val=0.91),
          _trial("TERMINATED", 2, val=0.12),  # ended before its last epoch: stopped
          _trial("TERMINATED", 1, result_status="diverged", val=0.05),
          _trial("ERROR"), _trial("RUNNING", 1, val=0.95), _trial("PENDING")]


def test_the_line_counts_by_status_against_the_trials_proposed_so_far():
    line = summary_line(TRIALS, total=10, elapsed=40.0, metric="val_acc", mode="max")
    assert line == ("4/6 trials done (1 completed, 1 stopped, 1 diverged, 1 error) · 1 running · 0:40 elapsed"
                    " · at most 10 · best val_acc 0.950")


def test_a_pack_counts_its_members_as_trials():
    running = _pack("RUNNING", [_epoch(0, 2, "diverged", 0.1), _epoch(1, 2, val=0.5),
                                _epoch(2, 1, val=0.3, stop_reason="gradient collapsed")])
    ended = _pack("TERMINATED", [_epoch(0, 4, "completed", 0.9), _epoch(1, 3, val=0.99), None])
    failed = _pack("ERROR", [_epoch(0, 4, "completed", 0.8), _epoch(1, 2, val=0.2)])
    line = summary_line([running, ended, failed], total=8, elapsed=70.0, metric="val_acc", mode="max")
    # running: 1 diverged, 1 stopped by the stopper, 1 training; ended: 1 completed, 2 stopped by the
    # scheduler (one before its first epoch); failed: 1 completed before the error, 1 error
    assert line == ("7/8 trials done (2 completed, 3 stopped, 1 diverged, 1 error) · 1 running · 1:10 elapsed"
                    " · at most 8 · best val_acc 0.990")


def test_nothing_done_yet():
    assert summary_line([_trial("PENDING")], 3, 5.0, "val_acc", "max").startswith("0/1 trials done · 0 running")


def test_a_log_gets_plain_lines_at_most_every_interval():
    out = io.StringIO()
    progress = ProgressLine(total=10, metric="train_loss", mode="min", every=3600, stream=out)
    assert progress.should_report(TRIALS)
    progress.report(TRIALS, done=False)
    assert not progress.should_report(TRIALS) and progress.should_report(TRIALS, done=True)
    progress.report(TRIALS, done=True)
    assert out.getvalue().count("\n") == 2 and "\r" not in out.getvalue()
