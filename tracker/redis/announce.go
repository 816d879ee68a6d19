package redis

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Lengths of the packed peer entries (see the package comment): the peer key, the member's
// suffix after it, and whole members, by family.
const (
	keyLen     = 25
	suffix4Len = 1 + 2 + 4
	suffix6Len = 1 + 2 + 16
	member4Len = keyLen + suffix4Len
	member6Len = keyLen + suffix6Len
)

// maxPreferScan bounds how many candidates one announce inspects for peers in the requester's
// own subnet, as in the memory driver, so that preferred_subnet never makes an announce
// O(swarm size).
const maxPreferScan = 4096

// announceSource is the announce script with its constants filled in.
var announceSource = strings.NewReplacer(
	"FAM4", strconv.Itoa(int(models.IPv4)),
	"MAXSCAN", strconv.Itoa(maxPreferScan),
).Replace(announceLua)

var (
	announceScript = goredis.NewScript(announceSource)
	// The script's digest and source, boxed once so that no announce allocates for them.
	announceSHA  any = announceScript.Hash()
	announceEval any = announceSource
)

// Arguments of the announce script (ARGV, 1-based in the script).
const (
	argKey = iota
	argMember
	argValue
	argFlags
	argTime
	argWant
	argRandom
	argInfoHash
	argCounters
	argUser
	argPreferBits
	argPreferAddr
	argPreferFamily
	argTwin
	announceArgs
)

// announceCall is the scratch of one announce. The command's arguments point into strs, and
// strs into one string built from buf, so that a warm announce allocates that string, the
// command and the reply, whatever the number of arguments.
type announceCall struct {
	buf  []byte
	strs [nTorrentKeys + announceArgs]string
	args [3 + nAllKeys + announceArgs]any
}

var announceCalls = sync.Pool{New: func() any { return &announceCall{buf: make([]byte, 0, 512)} }}

// build fills c.args with the EVALSHA command of one announce.
func (c *announceCall) build(p *Pool, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection) []any {
	var lo, hi [len(c.strs)]int
	b := c.buf[:0]

	// The torrent's keys: P{H}:s and so on.
	var hx [40]byte
	hex.Encode(hx[:], ih[:])
	for i, suffix := range [nTorrentKeys]byte{'s', 'l', 'p', 't', 'k', 'x', 'y'} {
		lo[i] = len(b)
		b = append(b, p.prefix...)
		b = append(b, '{')
		b = append(b, hx[:]...)
		b = append(b, '}', ':', suffix)
		hi[i] = len(b)
	}
	const a = nTorrentKeys // index of ARGV 1 in strs

	// The member: the peer key, then the suffix (hidden, port, address).
	lo[a+argKey], lo[a+argMember] = len(b), len(b)
	b = append(b, u.Key.ID[:]...)
	b = append(b, byte(u.Key.Family))
	b = binary.BigEndian.AppendUint32(b, u.Key.User)
	hi[a+argKey] = len(b)
	b = appendSuffix(b, u)
	hi[a+argMember] = len(b)
	// The value: the suffix again, the seeder flag, then "time:uploaded:downloaded".
	lo[a+argValue] = len(b)
	b = append(b, b[hi[a+argKey]:hi[a+argMember]]...)
	b = append(b, bitByte(u.Seeder))
	now := u.Time.Unix()
	b = strconv.AppendInt(b, now, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, u.Uploaded, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, u.Downloaded, 10)
	hi[a+argValue] = len(b)

	lo[a+argFlags] = len(b)
	b = append(b, bitByte(u.Remove), bitByte(u.Seeder), bitByte(u.Completed), bitByte(u.Create),
		bitByte(sel.Seeder), bitByte(sel.IPv4), bitByte(sel.IPv6), bitByte(sel.SkipOwnUser), bitByte(!p.cluster), bitByte(u.Hidden),
		bitByte(u.Secondary))
	hi[a+argFlags] = len(b)
	lo[a+argTime] = len(b)
	b = strconv.AppendInt(b, now, 10)
	hi[a+argTime] = len(b)
	lo[a+argWant] = len(b)
	b = strconv.AppendInt(b, int64(max(sel.Want, 0)), 10)
	hi[a+argWant] = len(b)
	lo[a+argRandom] = len(b)
	b = strconv.AppendInt(b, rand.Int64N(1<<52), 10)
	hi[a+argRandom] = len(b)
	lo[a+argInfoHash] = len(b)
	b = append(b, ih[:]...)
	hi[a+argInfoHash] = len(b)
	lo[a+argCounters] = len(b)
	b = strconv.AppendInt(b, u.Uploaded, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, u.Downloaded, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, u.Corrupt, 10)
	hi[a+argCounters] = len(b)
	lo[a+argUser] = len(b)
	b = strconv.AppendUint(b, uint64(u.Key.User), 10)
	hi[a+argUser] = len(b)

	// The preferred subnet: its bits (-1 for none), its masked address and its family.
	pre := sel.Prefer
	bits, fam := -1, models.IPv4
	lo[a+argPreferAddr] = len(b)
	if pre.IsValid() {
		bits = pre.Bits()
		if m := pre.Masked().Addr(); m.Is4() {
			a4 := m.As4()
			b = append(b, a4[:]...)
		} else {
			a16 := m.As16()
			b, fam = append(b, a16[:]...), models.IPv6
		}
	}
	hi[a+argPreferAddr] = len(b)
	lo[a+argPreferBits] = len(b)
	b = strconv.AppendInt(b, int64(bits), 10)
	hi[a+argPreferBits] = len(b)
	lo[a+argPreferFamily] = len(b)
	b = strconv.AppendInt(b, int64(fam), 10)
	hi[a+argPreferFamily] = len(b)
	// The peer key of the other family.
	lo[a+argTwin] = len(b)
	b = append(b, b[lo[a+argKey]:hi[a+argKey]]...)
	b[lo[a+argTwin]+20] = byte(models.IPv4 + models.IPv6 - u.Key.Family)
	hi[a+argTwin] = len(b)
	c.buf = b

	s := string(b)
	for i := range c.strs {
		c.strs[i] = s[lo[i]:hi[i]]
	}

	args := c.args[:0]
	args = append(args, "evalsha", announceSHA)
	if p.cluster {
		args = append(args, "7")
	} else {
		args = append(args, "10")
	}
	for i := range nTorrentKeys {
		args = append(args, &c.strs[i])
	}
	if !p.cluster {
		args = append(args, &p.index, &p.counts, &p.sessions)
	}
	for i := range announceArgs {
		args = append(args, &c.strs[a+i])
	}
	return args
}

// appendSuffix appends the member's suffix of u: hidden ('0' or '1'), port (big endian) and
// address (4 bytes for IPv4, 16 for IPv6).
func appendSuffix(b []byte, u *tracker.PeerUpdate) []byte {
	b = append(b, bitByte(u.Hidden))
	b = binary.BigEndian.AppendUint16(b, u.AddrPort.Port())
	addr := u.AddrPort.Addr()
	if u.Key.Family == models.IPv4 {
		var a4 [4]byte
		if a := addr.Unmap(); a.Is4() {
			a4 = a.As4()
		}
		return append(b, a4[:]...)
	}
	var a16 [16]byte
	if addr.IsValid() {
		a16 = addr.As16()
	}
	return append(b, a16[:]...)
}

func bitByte(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

// isNoScript tells whether err means that the server does not know the script's digest (it
// restarted, or was flushed).
func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, goredis.ErrNoScript) || goredis.HasErrorPrefix(err, "NOSCRIPT"))
}

// Announce implements tracker.Conn with one script call (and, in cluster mode, one pipelined
// update of the global keys when the swarm's size or the torrent's index entry changed).
//
// In cluster mode, once the script has run the swarm is updated and res is right, so a
// failure to update the global keys does not fail the announce: the update is deferred (see
// global.go) and counted in chihaya_redis_errors_total{op="global"}. An announce that updates
// the global keys also carries along up to announceFlush deferred updates in the same
// pipeline; one with nothing to update checks an atomic counter only, and makes no round trip.
func (p *Pool) Announce(ctx context.Context, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection, res *tracker.AnnounceResult) error {
	res.Prev = tracker.PrevPeer{}
	res.Snatched, res.TorrentID, res.Freeleech, res.Token = false, 0, models.Normal, false
	res.Seeders, res.Leechers, res.Snatches = 0, 0, 0

	c := announceCalls.Get().(*announceCall)
	args := c.build(p, ih, u, sel)
	cmd := goredis.NewCmd(ctx, args...)
	err := p.client.Process(ctx, cmd)
	if isNoScript(err) {
		args[0], args[1] = "eval", announceEval
		cmd = goredis.NewCmd(ctx, args...)
		err = p.client.Process(ctx, cmd)
	}
	announceCalls.Put(c)
	if err != nil {
		return p.announceErr(ih, err)
	}
	reply, err := cmd.Text()
	if err != nil {
		return p.announceErr(ih, err)
	}
	if reply == "N" {
		return models.ErrTorrentNotFound
	}
	g := global{index: indexKeep, sessionAt: -1}
	if err := parseAnnounce(reply, res, &g); err != nil {
		return p.announceErr(ih, err)
	}
	if p.cluster && g.changes() {
		// A copy, so that g stays on the stack when there is nothing to apply.
		apply := g
		apply.ih = string(ih[:])
		if apply.sessionAt >= 0 {
			apply.sessionAt = u.Time.Unix()
		}
		// What fails is deferred and counted: see the doc comment. After a failure, announces
		// defer without trying for globalHoldFor, so that while the global keys' master is
		// down only one announce in that time waits for its deadline.
		if time.Now().UnixNano() < p.globalHold.Load() {
			p.deferGlobal(&apply)
		} else if err := p.applyGlobals(ctx, []global{apply}, announceFlush); err != nil {
			p.globalHold.Store(time.Now().Add(globalHoldFor).UnixNano())
		}
	}
	return nil
}

// announceErr wraps and counts an announce's error. It takes ih by value, so that Announce's
// own copy does not escape to the heap on the way that does not fail.
func (p *Pool) announceErr(ih models.InfoHash, err error) error {
	return p.fail(opAnnounce, fmt.Errorf("redis: announce %x: %w", ih[:], err))
}

// Length of the announce script's reply before its strings: sixteen 64-bit integers.
const announceHeader = 16 * 8

var errShortReply = errors.New("short script reply")

// parseAnnounce fills res, and g with what the global keys need, from the announce script's
// reply (see announceLua). It does not allocate unless the reply is malformed; the peers go to
// res's slices, which allocate only past their capacity. g.sessionAt is 0 when the session is
// new, for the caller to set.
func parseAnnounce(reply string, res *tracker.AnnounceResult, g *global) error {
	if len(reply) < announceHeader {
		return errShortReply
	}
	var h [announceHeader / 8]int64
	for i := range h {
		h[i] = int64(beUint64(reply[8*i:]))
	}
	res.Snatched = h[0] == 1
	res.Seeders, res.Leechers, res.Snatches = int(h[1]), int(h[2]), int(h[3])
	if h[6] == 1 {
		g.sessionAt = 0
	}
	copy(g.counts[:], h[7:12])
	if h[12] >= 0 {
		g.index, g.indexLT = h[12], true
	}
	rest := reply[announceHeader:]
	var strs [3]string
	for i, n := range h[13:16] {
		if n < 0 || n > int64(len(rest)) {
			return errShortReply
		}
		strs[i], rest = rest[:n], rest[n:]
	}
	prev, siteID, session := strs[0], strs[1], strs[2]
	if prev != "" {
		if err := parsePrev(prev, &res.Prev); err != nil {
			return fmt.Errorf("stored peer: %w", err)
		}
	}
	if siteID != "" {
		var err error
		if res.TorrentID, err = strconv.ParseUint(siteID, 10, 64); err != nil {
			return fmt.Errorf("torrent id %q: %w", siteID, err)
		}
		res.Freeleech = models.FreeleechType(h[4])
		res.Token = h[5] == 1
	}
	if session != "" {
		if err := parseSession(session, &res.Prev); err != nil {
			return fmt.Errorf("session: %w", err)
		}
	}
	return appendPeers(rest, res)
}

// beUint64 reads a big-endian uint64 from the first 8 bytes of s.
func beUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[0])<<56 | uint64(s[1])<<48 | uint64(s[2])<<40 | uint64(s[3])<<32 |
		uint64(s[4])<<24 | uint64(s[5])<<16 | uint64(s[6])<<8 | uint64(s[7])
}

// parsePrev fills prev from a stored value without its suffix: the seeder flag, then
// "time:uploaded:downloaded".
func parsePrev(s string, prev *tracker.PrevPeer) error {
	var f [3]int64
	if err := parseFields(s[1:], f[:]); err != nil {
		return err
	}
	prev.Found, prev.Seeder = true, s[0] == '1'
	prev.Time = time.Unix(f[0], 0)
	prev.Uploaded, prev.Downloaded = f[1], f[2]
	return nil
}

// parseSession fills prev from a stored session, as the memory driver does: the session's
// counters replace the entry's, and a session without an entry is a restored baseline.
func parseSession(s string, prev *tracker.PrevPeer) error {
	var f [6]int64
	if err := parseFields(s, f[:]); err != nil {
		return err
	}
	prev.Restored = !prev.Found
	prev.Uploaded, prev.Downloaded, prev.Corrupt = f[0], f[1], f[2]
	prev.FirstSeen, prev.Time = time.Unix(f[3], 0), time.Unix(f[4], 0)
	prev.Announces = int(f[5])
	return nil
}

// parseFields parses len(f) decimal numbers separated by ':' from s into f.
func parseFields(s string, f []int64) error {
	orig := s
	for i := range f {
		field, rest, ok := strings.Cut(s, ":")
		if ok != (i < len(f)-1) {
			return fmt.Errorf("%q: want %d fields", orig, len(f))
		}
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return fmt.Errorf("field %d of %q: %w", i, orig, err)
		}
		f[i], s = n, rest
	}
	return nil
}

// appendPeers appends the peers of concatenated members to res.
func appendPeers(s string, res *tracker.AnnounceResult) error {
	for len(s) > 0 {
		if len(s) <= keyLen-5 {
			return fmt.Errorf("stored peer: %d bytes left", len(s))
		}
		fam := models.Family(s[20])
		n := member6Len
		if fam == models.IPv4 {
			n = member4Len
		} else if fam != models.IPv6 {
			return fmt.Errorf("stored peer: family %d", fam)
		}
		if len(s) < n {
			return fmt.Errorf("stored peer: %d bytes left, want %d", len(s), n)
		}
		var peer models.Peer
		copy(peer.ID[:], s[:20])
		port := uint16(s[keyLen+1])<<8 | uint16(s[keyLen+2])
		var a netip.Addr
		if fam == models.IPv4 {
			var a4 [4]byte
			copy(a4[:], s[keyLen+3:n])
			a = netip.AddrFrom4(a4)
		} else {
			var a16 [16]byte
			copy(a16[:], s[keyLen+3:n])
			a = netip.AddrFrom16(a16)
		}
		peer.AddrPort = netip.AddrPortFrom(a, port)
		if fam == models.IPv4 {
			res.IPv4Peers = append(res.IPv4Peers, peer)
		} else {
			res.IPv6Peers = append(res.IPv6Peers, peer)
		}
		s = s[n:]
	}
	return nil
}
