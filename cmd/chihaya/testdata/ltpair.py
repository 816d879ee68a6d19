#!/usr/bin/python3
"""Two python3-libtorrent sessions in one process, driven by ltpair_test.go.

A seeder session and a leecher session, each listening on its own port of 127.0.0.1, share the
process's cache of UDP tracker connection IDs, as two torrents of one qBittorrent or Deluge do
when they announce from different sockets. The seeder starts first; the leecher is added once
the seeder has its first tracker reply, so that it finds the seeder's connection ID in the
cache. The tracker is the only way to find peers: DHT, local service discovery, UPnP/NAT-PMP and
peer exchange are off. It logs each session's status once a second and the alerts that matter
to standard output, and runs until it is killed.

Usage: ltpair.py --torrent FILE --seed-dir DIR --leech-dir DIR --seed-port N --leech-port N
"""

import argparse
import time

import libtorrent as lt

from ltclient import add_torrent, session  # the swarm test's client's settings


def log(msg):
    print("%.3f %s" % (time.time(), msg), flush=True)


def drain(name, ses):
    """Logs the session's alerts; returns True if one was a tracker reply."""
    replied = False
    for a in ses.pop_alerts():
        log("%s alert %s: %s" % (name, type(a).__name__, a.message()))
        if isinstance(a, lt.tracker_reply_alert):
            replied = True
    return replied


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--seed-dir", required=True)
    ap.add_argument("--leech-dir", required=True)
    ap.add_argument("--seed-port", type=int, required=True)
    ap.add_argument("--leech-port", type=int, required=True)
    args = ap.parse_args()

    seeder = session(args.seed_port)
    leecher = session(args.leech_port)
    sh = add_torrent(seeder, args.torrent, args.seed_dir)
    log("seeder added on port %d" % args.seed_port)
    lh = None
    last = 0.0
    while True:
        seeder.wait_for_alert(250)
        if drain("seeder", seeder) and lh is None:
            lh = add_torrent(leecher, args.torrent, args.leech_dir)
            log("leecher added on port %d" % args.leech_port)
        drain("leecher", leecher)
        now = time.time()
        if now - last >= 1:
            last = now
            for name, h in (("seeder", sh), ("leecher", lh)):
                if h is None:
                    continue
                s = h.status()
                log("%s status: state=%s progress=%.3f peers=%d seeding=%s" % (
                    name, s.state, s.progress, s.num_peers, s.is_seeding))


if __name__ == "__main__":
    main()
