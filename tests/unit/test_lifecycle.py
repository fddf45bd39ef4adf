"""The lifecycle: signals and stop requests in one queue, handlers restored afterwards."""

from __future__ import annotations

import os
import signal
import threading

from modelgen_watcher.lifecycle import Lifecycle


def test_a_signal_ends_the_wait_with_its_name_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with Lifecycle() as life:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert life.wait(timeout=10) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_another_thread_can_end_the_wait() -> None:
    with Lifecycle() as life:
        threading.Timer(0.05, life.stop, args=("lost the watch dir",)).start()
        assert life.wait(timeout=10) == "lost the watch dir"


def test_the_wait_times_out_with_none() -> None:
    with Lifecycle() as life:
        assert life.wait(timeout=0.01) is None


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with Lifecycle():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=body)
    worker.start()
    worker.join(10)
    assert seen == [before]
