package memory

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/models"
)

// A snapshot is the pool's swarms in one file, so that a restart or an upgrade does not empty
// them. Its layout, all integers little-endian unless said:
//
//	header   magic "CHYSNAP\n" (8) | version uint32 | taken int64 (unix seconds) |
//	         key seed uint64 (the pool's idHasher)                            28 bytes
//	torrent  info hash (20) | uvarint peers | uvarint seeders | uvarint snatches,
//	         then its peers, seeders first
//	peer     key (6: the peer ID's keyed hash) | address (4: IPv4, or the last four bytes
//	         of IPv6) | port uint16 big-endian | uvarint (age<<4 | flags),
//	         then the rest of an IPv6 address (12) when flags say IPv6,
//	         uvarint user when flags say user, uvarint uploaded and downloaded when flags
//	         say counters
//	trailer  torrents uint64 | peers uint64 | CRC-32C (Castagnoli) of everything before
//	         it, uint32                                                       20 bytes
//
// age is taken minus the peer's last announce, in seconds (0 when the clock went back). A
// public IPv4 peer seen within the last 17 minutes takes 14 bytes, and 15 up to 36 hours; a
// torrent's header is 23 to 27 bytes, shared by its peers. The keys mean something only with
// their seed: Restore gives an empty pool the file's seed, and a pool that has peers already
// skips a file with another seed.
//
// Version 1, written before peers were keyed by a hash, has no seed in its header and the
// whole peer ID (20 bytes) in place of the key; it is still read, and its IDs are hashed with
// the pool's seed.
const (
	snapMagic   = "CHYSNAP\n"
	snapVersion = 2
	snapHeader  = 8 + 4 + 8 + 8
	snapHeader1 = 8 + 4 + 8 // version 1's
	snapTrailer = 8 + 8 + 4

	peerIPv6     = 1 << 0
	peerHidden   = 1 << 1
	peerUser     = 1 << 2
	peerCounters = 1 << 3
	peerFlagBits = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of a snapshot that is refused. They wrap into a *SnapshotError that names the file.
var (
	ErrSnapshotForeign   = errors.New("not a Chihaya snapshot (wrong magic)")
	ErrSnapshotVersion   = errors.New("unsupported snapshot version")
	ErrSnapshotTruncated = errors.New("truncated")
	ErrSnapshotChecksum  = errors.New("checksum mismatch")
	ErrSnapshotCorrupt   = errors.New("corrupt")
)

// SnapshotError is a refused snapshot file: its path, and why.
type SnapshotError struct {
	Path string
	Err  error
}

func (e *SnapshotError) Error() string { return fmt.Sprintf("snapshot %s: %v", e.Path, e.Err) }
func (e *SnapshotError) Unwrap() error { return e.Err }

// RestoreResult counts what Restore loaded.
type RestoreResult struct {
	Torrents int // torrents that got peers, or a downloaded count, from the file
	Peers    int // peers restored
	Stale    int // peers dropped because their last announce was before the cutoff
	Skipped  int // peers dropped for another reason: a limit, an unregistered torrent, a duplicate
	Bytes    int64
	Taken    time.Time // when the snapshot was written
}

// snapshotState is the pool's snapshot configuration and metrics.
type snapshotState struct {
	path     string
	interval time.Duration
	// mu makes snapshot writes one at a time: the periodic one, a final one at shutdown, one
	// before an upgrade.
	mu sync.Mutex

	duration prometheus.Gauge
	size     prometheus.Gauge
	written  prometheus.Counter
	failed   prometheus.Counter
	restored prometheus.Counter
	stale    prometheus.Counter

	// base holds the downloaded counts Restore set, by torrent, while a delta is expected
	// (ExpectDelta): MergeDelta adds what the old process counted beyond them.
	base map[models.InfoHash]uint32
}

func (s *snapshotState) init() {
	s.duration = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "duration_seconds",
		Help: "How long the last snapshot of the memory driver's swarms took to write.",
	})
	s.size = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "bytes",
		Help: "The size of the last snapshot written.",
	})
	s.written = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "written_total",
		Help: "Snapshots written.",
	})
	s.failed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "failures_total",
		Help: "Snapshots that could not be written.",
	})
	s.restored = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "peers_restored_total",
		Help: "Peers restored from a snapshot at start.",
	})
	s.stale = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "snapshot", Name: "peers_stale_total",
		Help: "Peers in a snapshot dropped at start because their last announce was older than peer_timeout.",
	})
}

// Collectors returns the driver's metrics for the caller to register:
// chihaya_snapshot_duration_seconds and chihaya_snapshot_bytes of the last snapshot written,
// chihaya_snapshot_written_total and chihaya_snapshot_failures_total, and
// chihaya_snapshot_peers_restored_total and chihaya_snapshot_peers_stale_total of the restore at
// start. Each call returns the same collectors.
func (p *Pool) Collectors() []prometheus.Collector {
	s := &p.snap
	return []prometheus.Collector{s.duration, s.size, s.written, s.failed, s.restored, s.stale}
}

// SnapshotPath returns the configured snapshot file, or "" when snapshots are off.
func (p *Pool) SnapshotPath() string { return p.snap.path }

// SetSnapshot sets where and how often RunSnapshots writes; an empty path turns snapshots off.
// Call it before the pool serves.
func (p *Pool) SetSnapshot(path string, interval time.Duration) {
	p.snap.path, p.snap.interval = path, interval
}

// RunSnapshots writes a snapshot every interval until ctx ends. It returns at once when
// snapshots are off. A failed write is logged and counted; the next one is tried on time.
func (p *Pool) RunSnapshots(ctx context.Context) {
	if p.snap.path == "" || p.snap.interval <= 0 {
		return
	}
	tick := time.NewTicker(p.snap.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := p.WriteSnapshot(ctx); err != nil {
				glog.Errorf("memory: %v", err)
			}
		}
	}
}

// WriteSnapshot writes the swarms to the configured path: to a temporary file beside it, which
// is synced and then renamed over the old snapshot, so that a crash leaves the old one or the
// new one, never half of one. It holds one shard's read lock at a time, only to copy the
// shard's records into a buffer. It returns the bytes written; with snapshots off it does
// nothing.
func (p *Pool) WriteSnapshot(ctx context.Context) (int64, error) {
	if p.snap.path == "" {
		return 0, nil
	}
	p.snap.mu.Lock()
	defer p.snap.mu.Unlock()
	start := time.Now()
	n, err := p.writeSnapshotFile(ctx, p.snap.path, start)
	if err != nil {
		p.snap.failed.Inc()
		return 0, fmt.Errorf("snapshot %s: %w", p.snap.path, err)
	}
	d := time.Since(start)
	p.snap.duration.Set(d.Seconds())
	p.snap.size.Set(float64(n))
	p.snap.written.Inc()
	glog.V(1).Infof("memory: snapshot %s written: %d bytes in %s", p.snap.path, n, d.Round(time.Millisecond))
	return n, nil
}

func (p *Pool) writeSnapshotFile(ctx context.Context, path string, now time.Time) (n int64, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if n, err = p.writeSnapshotTo(ctx, w, now, 0); err != nil {
		return 0, err
	}
	if err = w.Flush(); err != nil {
		return 0, err
	}
	if err = f.Sync(); err != nil {
		return 0, err
	}
	if err = f.Close(); err != nil {
		return 0, err
	}
	if err = os.Rename(tmp, path); err != nil {
		return 0, err
	}
	// The rename is durable once the directory is synced.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return n, nil
}

// writeSnapshotTo writes a snapshot taken at now to w: every peer, or with since > 0 only the
// peers whose last announce is at since (unix seconds) or later, and only the torrents that
// have such peers. It returns the bytes written.
func (p *Pool) writeSnapshotTo(ctx context.Context, w io.Writer, now time.Time, since int64) (int64, error) {
	var hdr [snapHeader]byte
	copy(hdr[:], snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], snapVersion)
	binary.LittleEndian.PutUint64(hdr[12:], uint64(now.Unix()))
	binary.LittleEndian.PutUint64(hdr[20:], p.ids.seed)
	crc := crc32.Update(0, castagnoli, hdr[:])
	if _, err := w.Write(hdr[:]); err != nil {
		return 0, err
	}
	// The counts are known only at the end, so they go in the trailer, and the file is
	// written in one pass.
	torrents, peers, crc, body, err := p.encodeShards(ctx, w, now.Unix(), since, crc)
	if err != nil {
		return 0, err
	}
	var tr [snapTrailer]byte
	binary.LittleEndian.PutUint64(tr[0:], torrents)
	binary.LittleEndian.PutUint64(tr[8:], peers)
	crc = crc32.Update(crc, castagnoli, tr[:16])
	binary.LittleEndian.PutUint32(tr[16:], crc)
	if _, err := w.Write(tr[:]); err != nil {
		return 0, err
	}
	return snapHeader + body + snapTrailer, nil
}

// encodeShards writes every shard's torrents to w and returns the counts, crc updated with
// what it wrote, and its length.
func (p *Pool) encodeShards(ctx context.Context, w io.Writer, now, since int64, crc uint32) (torrents, peers uint64, _ uint32, n int64, err error) {
	var buf []byte
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return 0, 0, 0, 0, err
		}
		s := &p.shards[i]
		s.mu.RLock()
		buf = buf[:0]
		for ti := range s.recs {
			t := &s.recs[ti]
			if !t.used || (t.n == 0 && t.snatches == 0) {
				continue
			}
			var k int
			if buf, k = appendTorrent(buf, t, s.newest, now, since); k >= 0 {
				torrents++
				peers += uint64(k)
			}
		}
		s.mu.RUnlock()
		crc = crc32.Update(crc, castagnoli, buf)
		n += int64(len(buf))
		if _, err := w.Write(buf); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	return torrents, peers, crc, n, nil
}

// appendTorrent appends t and its peers seen at since or later (all with since 0), and returns
// how many peers it wrote, or -1 when since > 0 and none qualifies (nothing is appended). The
// entries' stamps are read against ref, their shard's latest announce.
func appendTorrent(b []byte, t *torrent, ref, now, since int64) ([]byte, int) {
	ents, hi6, users := t.ents(), t.hi6(), t.users()
	n, nSeed := len(ents), t.seeders()
	if since > 0 {
		n, nSeed = 0, 0
		for i := range ents {
			if ents[i].seen.at(ref) >= since {
				n++
				if i < t.seeders() {
					nSeed++
				}
			}
		}
		if n == 0 {
			return b, -1
		}
	}
	b = append(b, t.ih[:]...)
	b = binary.AppendUvarint(b, uint64(n))
	b = binary.AppendUvarint(b, uint64(nSeed))
	b = binary.AppendUvarint(b, uint64(t.snatches))
	for i := range ents {
		e := &ents[i]
		seen := e.seen.at(ref)
		if since > 0 && seen < since {
			continue
		}
		b = append(b, e.id[:]...)
		b = append(b, e.addr[:]...)
		b = binary.BigEndian.AppendUint16(b, e.port)
		var flags uint64
		if e.flags&flagIPv6 != 0 {
			flags |= peerIPv6
		}
		if e.flags&flagHidden != 0 {
			flags |= peerHidden
		}
		var user uint32
		if users != nil {
			user = users[i]
		}
		if user != 0 {
			flags |= peerUser
		}
		up, down := t.counters(i)
		if up != 0 || down != 0 {
			flags |= peerCounters
		}
		age := uint64(0)
		if seen < now {
			age = uint64(now - seen)
		}
		b = binary.AppendUvarint(b, age<<peerFlagBits|flags)
		if flags&peerIPv6 != 0 {
			b = append(b, hi6[i][:]...)
		}
		if flags&peerUser != 0 {
			b = binary.AppendUvarint(b, uint64(user))
		}
		if flags&peerCounters != 0 {
			b = binary.AppendUvarint(b, uint64(up))
			b = binary.AppendUvarint(b, uint64(down))
		}
	}
	return b, n
}

// snapPeer is one peer as decoded from a snapshot.
type snapPeer struct {
	pe     pending
	seen   int64 // unix seconds of its last announce
	seeder bool
}

// snapInfo is what a snapshot's header says.
type snapInfo struct {
	version uint32
	taken   int64
	seed    uint64 // the key seed; 0 in version 1
}

// decodeSnapshot checks b's header, checksum and structure, and calls fn for each torrent
// with its peers (fn may be nil to validate only). peers is reused between calls. The peer IDs
// of a version 1 file are keyed with ids.
func decodeSnapshot(b []byte, ids idHasher, fn func(ih models.InfoHash, snatches uint32, peers []snapPeer) error) (info snapInfo, err error) {
	if len(b) < len(snapMagic) || string(b[:len(snapMagic)]) != snapMagic {
		if len(b) < len(snapMagic) && string(b) == snapMagic[:len(b)] {
			return info, ErrSnapshotTruncated
		}
		return info, ErrSnapshotForeign
	}
	if len(b) < 12 {
		return info, ErrSnapshotTruncated
	}
	info.version = binary.LittleEndian.Uint32(b[8:])
	header, idLen := snapHeader, len(idKey{})
	switch info.version {
	case snapVersion:
	case 1:
		header, idLen = snapHeader1, len(models.PeerID{})
	default:
		return info, fmt.Errorf("%w %d (this binary reads 1 and %d)", ErrSnapshotVersion, info.version, snapVersion)
	}
	if len(b) < header+snapTrailer {
		return info, ErrSnapshotTruncated
	}
	if want := binary.LittleEndian.Uint32(b[len(b)-4:]); crc32.Checksum(b[:len(b)-4], castagnoli) != want {
		return info, fmt.Errorf("%w (truncated or damaged)", ErrSnapshotChecksum)
	}
	info.taken = int64(binary.LittleEndian.Uint64(b[12:]))
	if info.version >= 2 {
		info.seed = binary.LittleEndian.Uint64(b[20:])
	}
	tr := b[len(b)-snapTrailer:]
	torrents := binary.LittleEndian.Uint64(tr[0:])
	peers := binary.LittleEndian.Uint64(tr[8:])
	d := snapDecoder{b: b[header : len(b)-snapTrailer]}
	// A peer takes at least its key, address, port and one byte of age and flags.
	minPeer := uint64(idLen + 4 + 2 + 1)
	var buf []snapPeer
	var seenPeers uint64
	for k := uint64(0); k < torrents; k++ {
		var ih models.InfoHash
		copy(ih[:], d.bytes(len(ih)))
		n := d.uvarint()
		seeds := d.uvarint()
		snatches := d.uvarint()
		if d.err != nil {
			return info, d.err
		}
		// The smallest peer bounds n by what is left before anything is allocated for it.
		if n > uint64(maxSwarm) || seeds > n || snatches > math.MaxUint32 || n > uint64(len(d.b))/minPeer {
			return info, fmt.Errorf("%w: torrent %d of %d: %d peers, %d seeders, %d snatches", ErrSnapshotCorrupt, k+1, torrents, n, seeds, snatches)
		}
		seenPeers += n
		buf = buf[:0]
		for j := uint64(0); j < n; j++ {
			var sp snapPeer
			var id models.PeerID
			if info.version == 1 {
				copy(id[:], d.bytes(idLen))
			} else {
				copy(sp.pe.e.id[:], d.bytes(idLen))
			}
			copy(sp.pe.e.addr[:], d.bytes(4))
			if pb := d.bytes(2); pb != nil {
				sp.pe.e.port = binary.BigEndian.Uint16(pb)
			}
			v := d.uvarint()
			flags, age := v&(1<<peerFlagBits-1), v>>peerFlagBits
			if flags&peerIPv6 != 0 {
				copy(sp.pe.hi6[:], d.bytes(12))
				sp.pe.e.flags |= flagIPv6
				sp.pe.key.v6 = true
			}
			if flags&peerHidden != 0 {
				sp.pe.e.flags |= flagHidden
			}
			if flags&peerUser != 0 {
				u := d.uvarint()
				if u == 0 || u > math.MaxUint32 {
					return info, fmt.Errorf("%w: torrent %d: peer %d: user %d", ErrSnapshotCorrupt, k+1, j+1, u)
				}
				sp.pe.key.user = uint32(u)
			}
			if flags&peerCounters != 0 {
				up, down := d.uvarint(), d.uvarint()
				if up > math.MaxInt64 || down > math.MaxInt64 {
					return info, fmt.Errorf("%w: torrent %d: peer %d: counters out of range", ErrSnapshotCorrupt, k+1, j+1)
				}
				sp.pe.up, sp.pe.down = int64(up), int64(down)
			}
			if d.err != nil {
				return info, d.err
			}
			if info.version == 1 {
				sp.pe.e.id = ids.idKey(&id)
			}
			sp.pe.key.id = sp.pe.e.id
			sp.seen = max(info.taken-int64(min(age, math.MaxInt32)), 0)
			sp.pe.e.seen = stampOf(sp.seen)
			sp.seeder = j < seeds
			buf = append(buf, sp)
		}
		if fn != nil {
			if err := fn(ih, uint32(snatches), buf); err != nil {
				return info, err
			}
		}
	}
	if seenPeers != peers {
		return info, fmt.Errorf("%w: header says %d peers, torrents hold %d", ErrSnapshotCorrupt, peers, seenPeers)
	}
	if len(d.b) != 0 {
		return info, fmt.Errorf("%w: %d bytes after the last torrent", ErrSnapshotCorrupt, len(d.b))
	}
	return info, nil
}

// snapDecoder reads a snapshot's body; its first error sticks.
type snapDecoder struct {
	b   []byte
	err error
}

func (d *snapDecoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%w: body ends early", ErrSnapshotCorrupt)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *snapDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrSnapshotCorrupt)
		return 0
	}
	d.b = d.b[k:]
	return v
}

// Restore loads the snapshot at the configured path into the pool, which should be empty and
// not yet serving, dropping the peers whose last announce is before cutoff. With
// registeredOnly (private mode) it adds peers only to torrents that exist already (that the
// site registered) and creates none. A missing file is no error: the pool starts empty. A
// file that is truncated, corrupt or not a snapshot is refused whole: it is renamed aside to
// PATH.bad-<unix time> (never deleted), nothing is loaded, and the error, a *SnapshotError,
// says why and where the file went.
func (p *Pool) Restore(ctx context.Context, cutoff time.Time, registeredOnly bool) (RestoreResult, error) {
	var r RestoreResult
	path := p.snap.path
	if path == "" {
		return r, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, &SnapshotError{Path: path, Err: err}
	}
	r.Bytes = int64(len(b))
	// Check the whole file before loading anything, so that a bad one leaves the pool empty.
	info, err := decodeSnapshot(b, p.ids, nil)
	if err != nil {
		aside := fmt.Sprintf("%s.bad-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			return r, &SnapshotError{Path: path, Err: fmt.Errorf("%w; could not move it aside: %v", err, rerr)}
		}
		return r, &SnapshotError{Path: path, Err: fmt.Errorf("%w; moved aside to %s, starting empty", err, aside)}
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	keep := p.adoptSeed(info)
	limit := cutoff.Unix()
	_, err = decodeSnapshot(b, p.ids, func(ih models.InfoHash, snatches uint32, peers []snapPeer) error {
		p.restoreTorrent(ih, snatches, peers, limit, registeredOnly, keep, &r)
		return nil
	})
	if err != nil {
		return r, &SnapshotError{Path: path, Err: err}
	}
	r.Taken = time.Unix(info.taken, 0)
	p.snap.restored.Add(float64(r.Peers))
	p.snap.stale.Add(float64(r.Stale))
	return r, nil
}

// adoptSeed makes a file's key seed the pool's when the pool holds no peer yet, and reports
// whether the file's keys are the pool's: its peers can be stored only then.
func (p *Pool) adoptSeed(info snapInfo) bool {
	if info.version < 2 || info.seed == p.ids.seed {
		return true
	}
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		for ti := range s.recs {
			if s.recs[ti].n > 0 {
				s.mu.RUnlock()
				return false
			}
		}
		s.mu.RUnlock()
	}
	p.ids.seed = info.seed
	return true
}

// restoreTorrent stores a snapshot's torrent and, with keep, its peers.
func (p *Pool) restoreTorrent(ih models.InfoHash, snatches uint32, peers []snapPeer, limit int64, registeredOnly, keep bool, r *RestoreResult) {
	s := p.shardFor(ih)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(ih)
	if t == nil {
		fresh := 0
		for i := range peers {
			if peers[i].seen >= limit {
				fresh++
			}
		}
		if registeredOnly || (fresh == 0 && snatches == 0) || s.usage.admit(true) != nil {
			for i := range peers {
				if peers[i].seen < limit {
					r.Stale++
				} else {
					r.Skipped++
				}
			}
			return
		}
		var err error
		if t, err = s.add(ih); err != nil {
			r.Skipped += len(peers)
			return
		}
	}
	r.Torrents++
	if t.x == nil || t.x.site == nil {
		// A registered torrent's downloaded count is the site's.
		t.snatches = max(t.snatches, snatches)
		if p.snap.base != nil {
			p.snap.base[ih] = snatches
		}
	}
	for i := range peers {
		sp := &peers[i]
		switch {
		case sp.seen < limit:
			r.Stale++
		case !keep || int(t.n) >= maxSwarm || t.find(sp.pe.key) >= 0 || s.usage.admit(false) != nil:
			r.Skipped++
		default:
			t.insert(&sp.pe, sp.seeder)
			s.newest = max(s.newest, sp.seen)
			s.usage.addPeers(1)
			r.Peers++
		}
	}
}

// maxDelta bounds the bytes MergeDelta reads.
const maxDelta = 1 << 32

// ExpectDelta makes the next Restore remember the downloaded counts it sets, for MergeDelta.
// Call it before Restore in a process that an upgrade started.
func (p *Pool) ExpectDelta() { p.snap.base = make(map[models.InfoHash]uint32) }

// WriteDelta writes to w, in the snapshot format, the peers whose last announce was at since or
// later, with their torrents' downloaded counts: what changed after the snapshot taken at since.
// An upgrade's old process writes it, once it has answered its last request, for the new process
// to merge (MergeDelta). It holds one shard's read lock at a time.
func (p *Pool) WriteDelta(ctx context.Context, w io.Writer, since time.Time) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	n, err := p.writeSnapshotTo(ctx, bw, time.Now(), max(since.Unix(), 1))
	if err == nil {
		err = bw.Flush()
	}
	return n, err
}

// MergeDelta reads a delta (WriteDelta) from r and merges it into the serving pool: a peer is
// stored unless the pool holds it already with a later or equal last announce, peers older than
// cutoff are dropped, and each torrent's downloaded count grows by what the delta counted beyond
// the snapshot Restore read. With registeredOnly, torrents that do not exist are not created. A
// delta that is not whole is refused and nothing is merged.
func (p *Pool) MergeDelta(ctx context.Context, r io.Reader, cutoff time.Time, registeredOnly bool) (RestoreResult, error) {
	var res RestoreResult
	defer func() { p.snap.base = nil }()
	b, err := io.ReadAll(io.LimitReader(r, maxDelta))
	if err != nil {
		return res, fmt.Errorf("read delta: %w", err)
	}
	res.Bytes = int64(len(b))
	info, err := decodeSnapshot(b, p.ids, nil)
	if err != nil {
		return res, fmt.Errorf("delta of %d bytes: %w", len(b), err)
	}
	// The pool serves already: the delta's keys are of use only if they are the pool's, as they
	// are when the pool restored the old process's snapshot.
	keep := info.version < 2 || info.seed == p.ids.seed
	if err := ctx.Err(); err != nil {
		return res, err
	}
	limit := cutoff.Unix()
	_, err = decodeSnapshot(b, p.ids, func(ih models.InfoHash, snatches uint32, peers []snapPeer) error {
		p.mergeTorrent(ih, snatches, peers, limit, registeredOnly, keep, &res)
		return nil
	})
	if err != nil {
		return res, err
	}
	res.Taken = time.Unix(info.taken, 0)
	p.snap.restored.Add(float64(res.Peers))
	p.snap.stale.Add(float64(res.Stale))
	return res, nil
}

// mergeTorrent merges a delta's torrent and, with keep, its peers.
func (p *Pool) mergeTorrent(ih models.InfoHash, snatches uint32, peers []snapPeer, limit int64, registeredOnly, keep bool, r *RestoreResult) {
	s := p.shardFor(ih)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(ih)
	if t == nil {
		if registeredOnly || s.usage.admit(true) != nil {
			r.Skipped += len(peers)
			return
		}
		var err error
		if t, err = s.add(ih); err != nil {
			r.Skipped += len(peers)
			return
		}
	}
	r.Torrents++
	if t.x == nil || t.x.site == nil {
		if base := p.snap.base[ih]; snatches > base {
			t.snatches += snatches - base
		}
	}
	for i := range peers {
		sp := &peers[i]
		if sp.seen < limit {
			r.Stale++
			continue
		}
		if !keep {
			r.Skipped++
			continue
		}
		s.newest = max(s.newest, sp.seen)
		j := t.find(sp.pe.key)
		switch {
		case j >= 0 && t.ents()[j].seen.at(s.newest) >= sp.seen:
			r.Skipped++ // this process has heard from the peer since
		case j >= 0 && (j < t.seeders()) == sp.seeder:
			if t.ents()[j].flags&flagBig != 0 {
				delete(t.x.big, sp.pe.key)
			}
			t.set(j, &sp.pe)
			r.Peers++
		case j >= 0:
			t.remove(j)
			t.insert(&sp.pe, sp.seeder)
			r.Peers++
		case int(t.n) >= maxSwarm || s.usage.admit(false) != nil:
			r.Skipped++
		default:
			t.insert(&sp.pe, sp.seeder)
			s.usage.addPeers(1)
			r.Peers++
		}
	}
}
