"""A client that takes a few batches, holds them, says so, and waits to be
killed (test_lifecycle)."""

import sys
import time

import stoker

socket, url, hold = sys.argv[1], sys.argv[2], int(sys.argv[3])
loader = stoker.Client(socket).loader(url, batch_size=16, slots=hold + 1, ring_bytes=(hold + 1) * (24 << 20))
it = iter(loader)
held = [next(it) for _ in range(hold)]
print(loader.session, sum(b.nbytes for b in held), flush=True)
time.sleep(600)
