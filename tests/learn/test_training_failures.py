"""Which failure a committee's training reports: the cause, not a partner it stopped."""

from concurrent.futures import Future

from mdmonitor.learn.training import TrainingFailed, TrainingStopped, _cause


def finished(result=None, error=None) -> Future:
    future = Future()
    future.set_running_or_notify_cancel()
    future.set_exception(error) if error else future.set_result(result)
    return future


def test_a_partner_stopped_by_a_failure_does_not_hide_it():
    failed = TrainingFailed("mace_run_train failed (exit 1) for model 1")
    stopped = TrainingStopped("the training was stopped before this model's trainer started")
    futures = [finished(error=stopped), finished(error=failed), finished("model_2.model")]
    assert _cause(futures, stopped) is failed
    # only stopped members (Ctrl-C before any trainer started): the first error stands
    assert _cause([finished(error=stopped)], stopped) is stopped
