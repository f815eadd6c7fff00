"""A standard XMPP client library (slixmpp) signing in to fedrouter over
STARTTLS with SCRAM-SHA-256, then chatting with a peer.

Usage: slixmpp_chat.py JID PASSWORD HOST PORT CA_FILE PEER COUNT
Sends COUNT messages "py<i>" to PEER, waits for COUNT replies "rs<i>" in
order, prints "OK <mechanism>" and exits 0; exits 1 on any failure or after
a bounded time.
"""
import asyncio
import sys

import slixmpp


class Chat(slixmpp.ClientXMPP):
    def __init__(self, jid, password, peer, count):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        self.peer = peer
        self.count = count
        self.got = 0
        self.failed = None
        self.mech = None
        self.done = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: self.finish("authentication failed"))
        self.add_event_handler("disconnected", lambda _: self.finish("disconnected"))

    def finish(self, error=None):
        if not self.done.done():
            self.failed = error
            self.done.set_result(True)

    async def start(self, _event):
        self.mech = self["feature_mechanisms"].mech.name if self["feature_mechanisms"].mech else "?"
        self.send_presence()
        await self.get_roster()
        for i in range(self.count):
            self.send_message(mto=self.peer, mbody=f"py{i}", mtype="chat")

    def on_message(self, msg):
        if msg["type"] not in ("chat", "normal"):
            return
        want = f"rs{self.got}"
        if msg["body"] != want:
            self.finish(f"expected {want!r}, got {msg['body']!r}")
            return
        self.got += 1
        if self.got == self.count:
            self.finish()


async def main():
    jid, password, host, port, ca, peer, count = sys.argv[1:8]
    xmpp = Chat(jid, password, peer, int(count))
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = False
    xmpp.ca_certs = ca
    xmpp.connect(host, int(port))
    try:
        await asyncio.wait_for(xmpp.done, timeout=60)
    except asyncio.TimeoutError:
        print(f"FAIL timeout after {xmpp.got} replies", flush=True)
        return 1
    if xmpp.failed:
        print(f"FAIL {xmpp.failed}", flush=True)
        return 1
    print(f"OK {xmpp.mech}", flush=True)
    xmpp.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
