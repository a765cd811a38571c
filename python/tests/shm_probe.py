"""Run inside a mount namespace whose /dev/shm is a 64 MiB tmpfs: starts a
daemon, holds rings well past 64 MiB, reads a dataset to the end, prints
"ok <samples> <peak held bytes>" (test_lifecycle)."""

import os
import subprocess
import sys
import time

import stoker

stoker_bin, url, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
shm = os.statvfs("/dev/shm")
assert shm.f_blocks * shm.f_frsize <= 64 << 20, "expected a 64 MiB /dev/shm"
sock = "/tmp/stoker-shm-probe/stoker.sock"
daemon = subprocess.Popen([stoker_bin, "serve", "--socket", sock, "--ring-memory", "1GiB"])
try:
    client = stoker.Client(sock)
    for _ in range(200):
        try:
            client.stats()
            break
        except stoker.StokerError:
            time.sleep(0.05)
    loader = client.loader(url, batch_size=32, slots=4, ring_bytes=4 * (48 << 20))
    held, peak, samples = [], 0, 0
    for batch in loader:
        samples += len(batch)
        held.append(batch)
        peak = max(peak, sum(b.nbytes for b in held))
        if len(held) == 3:
            for b in held:
                b.release()
            held = []
    print("ok", samples, peak, flush=True)
    assert samples == expected, (samples, expected)
finally:
    daemon.terminate()
    daemon.wait(15)
