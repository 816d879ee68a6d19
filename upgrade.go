package chihaya

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/udp"
)

// listeners opens the sockets Start serves on. The zero value listens anew; with an upgrader,
// sockets handed over by the process this one replaces are taken first.
type listeners struct {
	upg *tableflip.Upgrader
}

func (l listeners) tcp(addr string) (net.Listener, error) {
	if l.upg == nil {
		return net.Listen("tcp", addr)
	}
	return l.upg.Fds.Listen("tcp", addr)
}

// connIDKeyFile names the pipe that carries the UDP frontend's connection-ID secret to the new
// process, so that the IDs clients hold stay valid across an upgrade.
const connIDKeyFile = "udp-connection-id-key"

// connIDKey returns the connection-ID secret handed over by the process this one replaces, or
// false.
func (l listeners) connIDKey() ([16]byte, bool, error) {
	var key [16]byte
	if l.upg == nil {
		return key, false, nil
	}
	f, err := l.upg.Fds.File(connIDKeyFile)
	if err != nil || f == nil {
		return key, false, err
	}
	defer f.Close()
	if _, err := io.ReadFull(f, key[:]); err != nil {
		return key, false, fmt.Errorf("read the UDP connection ID secret handed over: %w", err)
	}
	return key, true, nil
}

// passConnIDKey puts the UDP frontend's connection-ID secret in a pipe the next process
// inherits.
func (c *Chihaya) passConnIDKey(upg *tableflip.Upgrader) error {
	if c.udp == nil {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	key := c.udp.ConnectionIDKey()
	_, err = w.Write(key[:])
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return upg.Fds.AddFile(connIDKeyFile, r)
}

func (l listeners) udp(addr string) (*net.UDPConn, error) {
	if l.upg == nil {
		return udp.Listen(addr)
	}
	pc, err := l.upg.Fds.ListenPacketWithCallback("udp", addr, func(_, a string) (net.PacketConn, error) {
		return udp.Listen(a)
	})
	if err != nil {
		return nil, err
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("inherited socket for %s is a %T, not UDP", addr, pc)
	}
	return conn, nil
}

// newUpgradeCounter returns chihaya_upgrades_total{result}: SIGUSR2 upgrades this process
// attempted, "succeeded" (the new process serves; this one is on its way out) or "failed"
// (this one goes on serving).
func newUpgradeCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "chihaya", Name: "upgrades_total",
		Help: "SIGUSR2 upgrades this process attempted, by result: succeeded (the new process serves) or failed (this one goes on serving).",
	}, []string{"result"})
	c.WithLabelValues("succeeded")
	c.WithLabelValues("failed")
	return c
}

// upgradeTimeout is how long a new process has to load the swarms and report ready before
// the old one gives up on it, kills it, and goes on serving.
const upgradeTimeout = 2 * time.Minute

// upgrade hands this process's sockets and swarms to a new process started from the binary's
// path with the same arguments: it writes a snapshot (when the tracker driver keeps one), starts
// the new process with the listening sockets, and returns once the new process has reported
// ready, or with why it did not. The caller then stops serving; on an error it goes on.
func (c *Chihaya) upgrade(ctx context.Context, upg *tableflip.Upgrader) error {
	var delta *deltaPipe
	if sn, ok := c.pool.(snapshotter); ok {
		since := time.Now()
		if sn.SnapshotPath() == "" {
			glog.Warningf("chihaya: upgrade: the tracker driver's snapshot_path is empty: the new process starts with empty swarms")
		} else if err := c.writeSnapshot(ctx); err != nil {
			return fmt.Errorf("swarms not handed over, upgrade abandoned: %w", err)
		} else if _, ok := c.pool.(deltaHandover); ok {
			// What changes between the snapshot and this process's last answer goes to the new
			// process through a pipe, once this one has stopped (Shutdown).
			r, w, err := os.Pipe()
			if err != nil {
				return fmt.Errorf("delta pipe: %w", err)
			}
			err = upg.Fds.AddFile(deltaFile, r)
			_ = r.Close()
			if err != nil {
				_ = w.Close()
				return fmt.Errorf("delta pipe: %w", err)
			}
			delta = &deltaPipe{w: w, since: since}
		}
	}
	if err := c.passConnIDKey(upg); err != nil {
		if delta != nil {
			_ = delta.w.Close()
		}
		return fmt.Errorf("hand over the UDP connection ID secret: %w", err)
	}
	if err := upg.Upgrade(); err != nil {
		if delta != nil {
			_ = delta.w.Close()
		}
		return err
	}
	c.deltaOut = delta
	return nil
}

// deltaFile names the pipe that carries the swarms' changes after the upgrade's snapshot.
const deltaFile = "swarm-delta"

// deltaHandover is an optional capability of a tracker driver that keeps snapshots: the
// changes after a snapshot, written by an upgrade's old process once it has stopped and merged
// by the new one while it serves.
type deltaHandover interface {
	ExpectDelta()
	WriteDelta(ctx context.Context, w io.Writer, since time.Time) (int64, error)
	MergeDelta(ctx context.Context, r io.Reader, cutoff time.Time, registeredOnly bool) (memory.RestoreResult, error)
}

// deltaPipe is the write end of the delta pipe, and the time of the snapshot it follows.
type deltaPipe struct {
	w     *os.File
	since time.Time
}

// writeDelta writes the swarms' changes since the upgrade's snapshot to the new process, after
// the last request was answered, within ctx.
func (c *Chihaya) writeDelta(ctx context.Context) error {
	d := c.deltaOut
	dh, ok := c.pool.(deltaHandover)
	if d == nil || !ok {
		return nil
	}
	defer d.w.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = d.w.SetWriteDeadline(dl)
	}
	start := time.Now()
	n, err := dh.WriteDelta(ctx, d.w, d.since)
	if err != nil {
		return fmt.Errorf("upgrade: hand the swarms' last changes to the new process: %w", err)
	}
	glog.Infof("chihaya: upgrade: handed the swarms' changes since the snapshot to the new process: %d bytes in %s", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// expectDelta returns the delta pipe inherited from the process this one replaces, if any, and
// readies the driver to merge it.
func (c *Chihaya) expectDelta(lis listeners) (*os.File, error) {
	dh, ok := c.pool.(deltaHandover)
	if !ok || lis.upg == nil {
		return nil, nil
	}
	f, err := lis.upg.Fds.File(deltaFile)
	if err != nil || f == nil {
		return nil, err
	}
	dh.ExpectDelta()
	return f, nil
}

// mergeDelta reads the old process's delta, which comes once that process has answered its last
// request, and merges it into the swarms while this process serves. It gives up when ctx ends.
func (c *Chihaya) mergeDelta(ctx context.Context, f *os.File) {
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	dh := c.pool.(deltaHandover)
	cutoff := time.Now().Add(-c.cfg.PeerTimeout.Duration)
	start := time.Now()
	r, err := dh.MergeDelta(ctx, f, cutoff, c.cfg.PrivateEnabled)
	if err != nil {
		glog.Errorf("chihaya: upgrade: the old process's last changes were not merged: %v", err)
		return
	}
	glog.Infof("chihaya: upgrade: merged the old process's last changes: %d peers of %d torrents (%d bytes) in %s; %d already newer here or skipped, %d stale",
		r.Peers, r.Torrents, r.Bytes, time.Since(start).Round(time.Millisecond), r.Skipped, r.Stale)
}

// notifyReady tells the service manager that this process serves: systemd's READY=1 with
// MAINPID, so that a unit with NotifyAccess=all follows the process an upgrade started. It
// does nothing without $NOTIFY_SOCKET.
func notifyReady() error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("READY=1\nMAINPID=" + strconv.Itoa(os.Getpid()) + "\n")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// handedOver is set once a new process serves in this one's place: its shutdown then writes
// no snapshot, which would replace the one the new process loaded and keeps up to date.
type handedOver struct{ atomic.Bool }
