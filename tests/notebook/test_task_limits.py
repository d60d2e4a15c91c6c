"""``%%omniq enqueue --ttl`` / ``--result-ttl`` in a real kernel with ``TASK_TTL`` / ``RESULT_TTL`` set (issue 13)."""

from __future__ import annotations

from kernel_driver import LOAD, KernelFactory, strip_ansi

ENQUEUE = "%%omniq enqueue --as {name} {flags}\n1 + 1"
FIELDS = "[{name}.task.expires_at is None, {name}.task.result_ttl]"


def test_flags_left_out_take_the_settings_and_none_opts_out(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_TASK_TTL="3600", OMNIQ_RESULT_TTL="60", OMNIQ_AUTOSTART="0")
    kernel.run(LOAD)
    cases = {"defaulted": "", "unlimited": "--ttl none --result-ttl none", "given": "--ttl 2h --result-ttl 15m"}
    for name, flags in cases.items():
        kernel.run(ENQUEUE.format(name=name, flags=flags))
    assert kernel.value(FIELDS.format(name="defaulted")) == [False, 60.0]
    assert kernel.value(FIELDS.format(name="unlimited")) == [True, None]
    assert kernel.value(FIELDS.format(name="given")) == [False, 900.0]
    assert kernel.value("(given.task.expires_at - given.task.eta).total_seconds()") == 7200.0
    bad = kernel.execute(ENQUEUE.format(name="bad", flags="--ttl soon"))
    assert "invalid duration value: 'soon'" in strip_ansi(bad.stderr), bad.describe()
    assert bad.errors == []
