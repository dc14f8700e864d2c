"""The validation gate's recall checks: the server index and, since issue #12, the on-device one."""

from __future__ import annotations

from nightly import gate


def test_ondevice_recall_below_the_minimum_fails_the_gate_and_says_which_index() -> None:
    check = gate.ondevice_recall_check(0.62, 0.75)
    assert not check.passed and check.name == "min_ondevice_recall"
    assert "on-device recall@10 0.6200 (required 0.7500)" in gate.describe_failures([check])
    assert gate.ondevice_recall_check(0.8, 0.75).passed
    assert gate.ondevice_recall_check(0.0, 0.0).passed  # 0 turns the check off
    assert not gate.ondevice_recall_check(None, 0.75).passed


def test_server_recall_check_is_unchanged() -> None:
    check = gate.recall_check(0.85, 0.9)
    assert not check.passed and check.name == "min_recall" and check.message.startswith("server recall@10 0.8500")
