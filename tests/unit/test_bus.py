import socket

from fcnetd.bus import _RetryingSocket


def test_full_socket_buffer_reports_zero_bytes_not_an_error():
    """Regression: dbus-fast dropped the daemon off the bus on EAGAIN."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        wrapped = _RetryingSocket(a)
        chunk = b"x" * 65536
        sent = [wrapped.send(chunk) for _ in range(200)]
        assert 0 in sent, "the buffer never filled"
        assert wrapped.fileno() == a.fileno()
    finally:
        a.close()
        b.close()
