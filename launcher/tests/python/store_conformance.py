"""Drives every store command from torch's own Python TCPStore client against two servers, ours
and torch's, and prints both transcripts as JSON for the Rust test to compare.

    store_conformance.py --ours HOST:PORT     run the script (starts torch's server itself)
    store_conformance.py --serve              host torch's TCPStore server, print its port,
                                              exit when stdin closes

The torch server runs in a separate Python process, started before this process imports torch,
so the two imports overlap.
"""

import json
import subprocess
import sys


def serve():
    from datetime import timedelta

    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    print(server.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    del server


def transcript(host, port):
    import threading
    import time
    from datetime import timedelta

    import torch.distributed as dist

    T = timedelta(seconds=5)
    SHORT = timedelta(milliseconds=100)
    out = []

    def client(**kw):
        kw.setdefault("wait_for_workers", False)
        return dist.TCPStore(host, port, is_master=False, timeout=T, **kw)

    def norm(v):
        if isinstance(v, bytes):
            return "b:" + v.decode("latin1")
        if isinstance(v, list):
            return [norm(x) for x in v]
        return repr(v)

    def step(name, fn):
        try:
            out.append([name, norm(fn())])
        except Exception as e:  # the error is part of the transcript
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out.append([name, "raised " + type(e).__name__, first])

    class in_thread:
        """Runs fn in a thread; calling the object joins it and returns (or raises) its result."""

        def __init__(self, fn):
            self.box = {}
            self.thread = threading.Thread(target=self._run, args=(fn,))
            self.thread.start()

        def _run(self, fn):
            try:
                self.box["ok"] = fn()
            except Exception as e:
                self.box["err"] = e

        def state(self):
            return "released" if not self.thread.is_alive() else "blocked"

        def __call__(self):
            self.thread.join(10)
            if self.thread.is_alive():
                return "still blocked"
            if "err" in self.box:
                raise self.box["err"]
            return self.box["ok"]

    def applied(c, result):
        """SET-like commands have no reply, so another connection may overtake them (on any
        server). A reply on the same connection proves the server has applied them."""
        c.check([])
        return result

    # world_size makes the client ADD "init/" 1 on connect, as workers do.
    a = client(world_size=1, wait_for_workers=True)
    b = client()

    step("set k", lambda: a.set("k", "v"))
    step("get k", lambda: a.get("k"))
    step("get k from another client", lambda: b.get("k"))
    step("set bytes", lambda: a.set("bin", b"\x00\xff\x01"))
    step("get bytes", lambda: b.get("bin"))
    step("set overwrite", lambda: applied(a, a.set("k", "v2")))
    step("get overwritten", lambda: b.get("k"))

    late = in_thread(lambda: b.get("late"))
    time.sleep(0.1)
    step("set late", lambda: a.set("late", "arrived"))
    step("blocked get of a key set later by another client", late)

    step("add new", lambda: a.add("n", 5))
    step("add negative", lambda: a.add("n", -7))
    step("get counter", lambda: a.get("n"))
    step("add zero", lambda: b.add("n", 0))

    step("compare_set absent, empty expected", lambda: a.compare_set("cas", "", "first"))
    step("get after cas store", lambda: a.get("cas"))
    step("compare_set absent, non-empty expected", lambda: a.compare_set("cas_absent", "x", "y"))
    step("check after cas no-write", lambda: a.check(["cas_absent"]))
    step("compare_set match", lambda: a.compare_set("cas", "first", "second"))
    step("compare_set mismatch", lambda: a.compare_set("cas", "nope", "third"))
    step("get after cas", lambda: a.get("cas"))

    step("check present", lambda: a.check(["k", "n"]))
    step("check missing", lambda: a.check(["k", "missing"]))
    step("check none", lambda: a.check([]))

    step("wait present", lambda: a.wait(["k"]))
    step("wait present, explicit timeout", lambda: a.wait(["k", "n"], T))
    step("wait timeout", lambda: a.wait(["missing", "missing2"], SHORT))
    step("usable after wait timeout", lambda: a.get("k"))
    waiting = in_thread(lambda: b.wait(["w1", "w2"], T))
    time.sleep(0.1)
    step("set w1", lambda: a.set("w1", "1"))
    time.sleep(0.1)
    step("wait still blocked after one of two keys", waiting.state)
    step("append w2", lambda: a.append("w2", "1"))
    step("wait released by the last key", waiting)
    step("get timeout", lambda: dist.TCPStore(host, port, is_master=False, timeout=SHORT).get("never"))

    step("delete_key absent", lambda: a.delete_key("never_set"))
    step("set to delete", lambda: a.set("del", "x"))
    step("delete_key", lambda: a.delete_key("del"))
    step("delete_key again", lambda: a.delete_key("del"))
    step("check deleted", lambda: a.check(["del"]))

    step("append new", lambda: a.append("ap", "x"))
    step("append more", lambda: a.append("ap", "yz"))
    step("get appended", lambda: a.get("ap"))

    step("multi_set", lambda: a.multi_set(["m1", "m2", "m3"], ["1", "", "3"]))
    step("multi_get", lambda: b.multi_get(["m1", "m2", "m3", "k"]))
    late_multi = in_thread(lambda: b.multi_get(["m1", "m_late"]))
    time.sleep(0.1)
    step("set m_late", lambda: a.set("m_late", "L"))
    step("multi_get waits for missing keys", late_multi)

    step("num_keys (includes init/)", lambda: a.num_keys())
    step("list_keys", lambda: sorted(a.list_keys()) if hasattr(a, "list_keys") else "no list_keys")

    p = dist.PrefixStore("pfx", a)
    pp = dist.PrefixStore("inner", p)
    step("prefix set", lambda: p.set("x", "px"))
    step("nested prefix set", lambda: pp.set("x", "ppx"))
    step("prefix get", lambda: p.get("x"))
    step("plain get of prefixed key", lambda: b.get("pfx/x"))
    step("plain get of nested key", lambda: b.get("pfx/inner/x"))
    step("prefix add", lambda: p.add("cnt", 2))
    step("prefix list_keys", lambda: sorted(p.list_keys()) if hasattr(p, "list_keys") else "no list_keys")

    has_queue = all(hasattr(a, m) for m in ("queue_push", "queue_pop", "queue_len"))
    step("has queues", lambda: has_queue)
    if has_queue:
        step("queue_push 1", lambda: a.queue_push("q", "one"))
        step("queue_push 2", lambda: applied(a, a.queue_push("q", "two")))
        step("queue_len", lambda: b.queue_len("q"))
        step("check non-empty queue", lambda: b.check(["q"]))
        step("num_keys ignores queues", lambda: b.num_keys())
        step("queue_pop blocking", lambda: b.queue_pop("q"))
        step("queue_pop non-blocking", lambda: b.queue_pop("q", block=False))
        step("queue_pop empty non-blocking", lambda: b.queue_pop("q", block=False))
        step("queue_len empty", lambda: b.queue_len("q"))
        step("queue_len never used", lambda: b.queue_len("nothing"))
        popper = in_thread(lambda: b.queue_pop("jobs"))
        time.sleep(0.1)
        step("queue_push to a blocked popper", lambda: a.queue_push("jobs", "job"))
        step("blocked queue_pop released", popper)

    has_barrier = hasattr(a, "barrier")
    step("has barrier", lambda: has_barrier)
    if has_barrier:
        others = [client(), client()]
        joins = [in_thread(lambda c=c: c.barrier("bar", 3)) for c in others]
        time.sleep(0.1)
        step("barrier not released early", lambda: [j.state() for j in joins])
        step("barrier last arrival", lambda: a.barrier("bar", 3))
        for i, j in enumerate(joins):
            step(f"barrier waiter {i} released", j)
        step("barrier counter", lambda: a.get("bar"))
        step("barrier timeout", lambda: a.barrier("lonely", 2, SHORT))
        step("usable after barrier timeout", lambda: a.get("lonely"))

    step("set text", lambda: a.set("text", "hello"))
    step("set numeric with trailing text", lambda: a.set("num", " 41tail"))
    step("add to numeric with trailing text", lambda: a.add("num", 1))
    victim = client()
    step("add to non-numeric value", lambda: victim.add("text", 1))
    step("other clients unaffected", lambda: a.get("text"))
    step("final num_keys", lambda: b.num_keys())
    step("final list_keys", lambda: sorted(b.list_keys()) if hasattr(b, "list_keys") else "no list_keys")
    return out


def main():
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    if len(sys.argv) != 3 or sys.argv[1] != "--ours":
        sys.exit(__doc__)
    host, port = sys.argv[2].rsplit(":", 1)
    torch_server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        import torch

        torch_port = int(torch_server.stdout.readline())
        # Both runs at once, to keep the test short; each has its own clients and keys.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            theirs = pool.submit(transcript, "127.0.0.1", torch_port)
            ours = pool.submit(transcript, host, int(port))
            result = {"torch_version": torch.__version__, "torch": theirs.result(), "ours": ours.result()}
    finally:
        torch_server.stdin.close()
        torch_server.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
