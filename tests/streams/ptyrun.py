"""Runs a command (kubectl exec -it …) under a pseudo-terminal of 80x24, waits for the
output to show that size, resizes the terminal to 100x30 (the kernel sends SIGWINCH),
waits for that size, types `q`, and exits with the command's status after printing all
it wrote. Used by tests/streams: `python3 ptyrun.py KUBECTL ARGS…`."""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


pid, fd = pty.fork()
if pid == 0:
    set_size(0, 24, 80)
    os.execv(sys.argv[1], sys.argv[1:])

out = b""
deadline = time.time() + 90


def read_until(token):
    global out
    while token is None or token not in out:
        if time.time() > deadline:
            return False
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return token is None
        if not chunk:
            return token is None
        out += chunk
    return True


ok = read_until(b"size 80x24")
if ok:
    set_size(fd, 30, 100)
    ok = read_until(b"size 100x30")
os.write(fd, b"q")
read_until(None)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.stdout.flush()
code = os.waitstatus_to_exitcode(status)
sys.exit(code if ok else 90)
