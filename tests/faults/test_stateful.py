"""A stateful property test of the real daemon (issue 9, fault tier): see
machine.py for the rules and the invariants checked after every step."""

from . import conftest


def test_daemon_and_kernel_follow_the_model():
    # imported here, after the tier's prerequisites (hypothesis among them) are checked
    from hypothesis.stateful import run_state_machine_as_test

    from .machine import SETTINGS, FcnetdMachine, Tally

    try:
        run_state_machine_as_test(FcnetdMachine, settings=SETTINGS)
    finally:
        conftest.report(f"stateful property test: {Tally.examples} examples, {Tally.steps} steps "
                        f"({Tally.calls} calls, {Tally.bursts} concurrent bursts, "
                        f"{Tally.restarts} restarts, {Tally.reloads} reloads)")
