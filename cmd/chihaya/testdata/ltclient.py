#!/usr/bin/python3
"""A minimal BitTorrent client on python3-libtorrent, driven by swarm_test.go.

It seeds or downloads one torrent on 127.0.0.1 and runs until it is killed. The tracker is
its only way to find peers: DHT, local service discovery, UPnP/NAT-PMP and peer exchange are
all off. It logs its status once a second and the alerts that matter (tracker replies and
errors, peer connections, completion) to standard output.

Usage: ltclient.py --torrent FILE --save DIR --port PORT [--seed]
"""

import argparse
import sys
import time

import libtorrent as lt


def log(msg):
    print("%.3f %s" % (time.time(), msg), flush=True)


def session(port):
    """A session listening on 127.0.0.1:port whose only way to find peers is the tracker."""
    settings = {
        "listen_interfaces": "127.0.0.1:%d" % port,
        "outgoing_interfaces": "127.0.0.1",
        # Only the tracker may introduce peers.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "dht_bootstrap_nodes": "",
        # Every peer of the test is on 127.0.0.1, so several connections from one IP must be
        # allowed (libtorrent refuses them by default).
        "allow_multiple_connections_per_ip": True,
        # Plain TCP keeps the test simple and the logs readable.
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        # Honour the tracker's short test intervals instead of clamping them to 5 minutes.
        "min_announce_interval": 1,
        "tracker_backoff": 10,
        "stop_tracker_timeout": 1,
        "alert_mask": int(
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.connect_notification
            | lt.alert.category_t.storage_notification
        ),
    }
    # flags=0: no default plugins, so no ut_pex (peer exchange) and no ut_metadata.
    return lt.session(settings, 0)


def add_torrent(ses, torrent, save):
    """Adds the torrent file to ses, started at once, kept off DHT, LSD and PEX."""
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    params.flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    return ses.add_torrent(params)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torrent", required=True, help="the .torrent file")
    ap.add_argument("--save", required=True, help="directory holding (or to hold) the payload")
    ap.add_argument("--port", type=int, required=True, help="TCP port to listen on, on 127.0.0.1")
    ap.add_argument("--seed", action="store_true", help="the payload is already in --save")
    args = ap.parse_args()

    ses = session(args.port)

    h = add_torrent(ses, args.torrent, args.save)
    log("added %s, info hash %s, %s on port %d" % (
        h.torrent_file().name(), h.info_hash(), "seeding" if args.seed else "downloading", args.port))

    last_status = 0.0
    while True:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            log("alert %s: %s" % (type(a).__name__, a.message()))
        now = time.time()
        if now - last_status >= 1:
            last_status = now
            s = h.status()
            log("status %s progress=%.1f%% peers=%d seeds=%d down=%d up=%d tracker=%r error=%r" % (
                s.state, s.progress * 100, s.num_peers, s.num_seeds,
                s.total_payload_download, s.total_payload_upload, s.current_tracker,
                s.errc.message() if s.errc.value() else ""))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
