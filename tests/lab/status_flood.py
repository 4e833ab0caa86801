"""`python -m tests.lab.status_flood SOCKET CLIENTS SECONDS`: CLIENTS threads ask a control
socket for `status` in a loop, each on a new connection, for SECONDS (issue 10 item 5's
attack). Prints "flooding" once they run, and at the end how many answers came back."""

from __future__ import annotations

import socket
import sys
import threading
import time


def flood(path: str, clients: int, seconds: float) -> int:
    end = time.monotonic() + seconds
    answers = [0] * clients

    def loop(i: int) -> None:
        while time.monotonic() < end:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(path)
                    sock.sendall(b'{"command": "status"}\n')
                    if sock.makefile("rb").readline():
                        answers[i] += 1
            except OSError:
                time.sleep(0.01)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    print("flooding", flush=True)
    for thread in threads:
        thread.join()
    return sum(answers)


if __name__ == "__main__":
    print(flood(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])), flush=True)
