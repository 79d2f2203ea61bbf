"""OrderedWriter: background writes in order; an error stops it and reaches the caller's thread."""
import errno
import threading

import pytest

from monitor.store.writer import OrderedWriter


def test_jobs_run_in_order_off_the_callers_thread_and_flush_waits_for_them():
    writer, done, threads = OrderedWriter(), [], set()
    gate = threading.Event()

    def job(i):
        def run():
            gate.wait(5)
            threads.add(threading.current_thread().name)
            done.append(i)
        return run

    for i in range(3):
        writer.submit(job(i))
    assert done == []  # submit returned while the first job was still waiting
    gate.set()
    writer.flush()
    assert done == [0, 1, 2]
    assert threads == {"monitor-writer"}
    writer.close()


def test_an_error_drops_the_later_jobs_and_is_raised_at_the_next_submit_and_flush():
    writer, done = OrderedWriter(), []
    gate = threading.Event()

    def fail():
        gate.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device", "/run/last_epoch=3.pt")

    writer.submit(fail)
    writer.submit(lambda: done.append("after"))  # names files the failed job did not write
    gate.set()
    with pytest.raises(OSError, match="No space left on device: '/run/last_epoch=3.pt'"):
        writer.flush()
    with pytest.raises(OSError, match="No space left"):
        writer.submit(lambda: done.append("later"))
    assert done == []
    writer.close()
    assert isinstance(writer.error, OSError)


def test_submit_blocks_when_max_pending_jobs_wait():
    writer, gate = OrderedWriter(max_pending=1), threading.Event()
    writer.submit(lambda: gate.wait(5))  # taken by the thread at once
    writer.submit(lambda: None)  # waits in the queue
    third = threading.Thread(target=writer.submit, args=(lambda: None,))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # blocked: the queue is full
    gate.set()
    third.join(5)
    assert not third.is_alive()
    writer.close()


def test_close_finishes_the_queue_and_refuses_more():
    writer, done = OrderedWriter(), []
    for i in range(3):
        writer.submit(lambda i=i: done.append(i))
    writer.close()
    assert done == [0, 1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(lambda: None)


def test_not_in_the_background_jobs_run_at_once_and_raise_there():
    writer, done = OrderedWriter(background=False), []
    writer.submit(lambda: done.append(threading.current_thread() is threading.main_thread()))
    assert done == [True]
    with pytest.raises(ZeroDivisionError):
        writer.submit(lambda: 1 / 0)
