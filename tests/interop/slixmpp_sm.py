"""slixmpp with XEP-0198 Stream Management against fedrouter: the client
enables SM (with resumption), receives numbered messages, has its TCP
connection cut without a stream close halfway, reconnects and resumes.

Usage: slixmpp_sm.py JID PASSWORD HOST PORT CA_FILE COUNT
Prints "READY" once the session is up, "CUT" when it has dropped the
connection (after COUNT/2 messages), and finally "OK resumed" if the
session was resumed and messages "sm0".."sm<COUNT-1>" each arrived exactly
once, in order; exits 1 otherwise, or after a bounded time.
"""
import asyncio
import sys

import slixmpp


class Sm(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port, count):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        self.register_plugin("xep_0198")
        self.where = (host, port)
        self.count = count
        self.got = []
        self.cut = False
        self.resumed = False
        self.starts = 0
        self.done = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("session_resumed", self.on_resumed)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("failed_auth", lambda _: self.finish("authentication failed"))

    def finish(self, error=None):
        if not self.done.done():
            self.done.set_result(error)

    async def start(self, _event):
        self.starts += 1
        if self.starts > 1:
            self.finish("a new session started instead of resuming the old one")
            return
        self.send_presence()
        print("READY", flush=True)

    def on_resumed(self, _event):
        self.resumed = True

    def on_message(self, msg):
        if msg["type"] not in ("chat", "normal"):
            return
        self.got.append(msg["body"])
        if len(self.got) == self.count // 2 and not self.cut:
            self.cut = True
            # Gone without </stream:stream>, as a dropped mobile link.
            self.transport.abort()
            print("CUT", flush=True)
        if len(self.got) >= self.count:
            self.finish()

    def on_disconnected(self, _event):
        if self.cut and not self.resumed and not self.done.done():
            loop = asyncio.get_event_loop()
            loop.call_later(0.5, lambda: self.connect(*self.where))


async def main():
    jid, password, host, port, ca, count = sys.argv[1:7]
    xmpp = Sm(jid, password, host, int(port), int(count))
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = False
    xmpp.ca_certs = ca
    xmpp.connect(host, int(port))
    try:
        error = await asyncio.wait_for(xmpp.done, timeout=60)
    except asyncio.TimeoutError:
        print(f"FAIL timeout with {len(xmpp.got)} messages", flush=True)
        return 1
    want = [f"sm{i}" for i in range(int(count))]
    if error:
        print(f"FAIL {error}", flush=True)
        return 1
    if not xmpp.resumed:
        print("FAIL the session was not resumed", flush=True)
        return 1
    if xmpp.got != want:
        print(f"FAIL got {xmpp.got}", flush=True)
        return 1
    print("OK resumed", flush=True)
    xmpp.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
