package loadgen

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
)

// poolSeed is mixed into every info hash so that the pool does not collide with hashes other
// tools use.
const poolSeed = 0x6368696861796121 // "chihaya!"

// splitmix64 is a bijective mixer: distinct inputs give distinct outputs.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// InfoHash returns torrent i of the pool. The pool is the same in every process, so the
// whitelist written by one process covers the hashes another sends. The first 8 bytes are a
// bijection of i, so distinct indexes give distinct hashes.
func InfoHash(i int) [20]byte {
	var h [20]byte
	a := splitmix64(uint64(i) ^ poolSeed)
	b := splitmix64(a)
	c := splitmix64(b)
	for k := range 8 {
		h[k] = byte(a >> (8 * k))
		h[8+k] = byte(b >> (8 * k))
	}
	for k := range 4 {
		h[16+k] = byte(c >> (8 * k))
	}
	return h
}

// WriteWhitelist writes the first n info hashes of the pool to w, in lowercase hex, one per line:
// the format of opentracker's access.whitelist.
func WriteWhitelist(w io.Writer, n int) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var line [41]byte
	line[40] = '\n'
	for i := range n {
		h := InfoHash(i)
		hex.Encode(line[:40], h[:])
		if _, err := bw.Write(line[:]); err != nil {
			return fmt.Errorf("loadgen: write whitelist: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("loadgen: write whitelist: %w", err)
	}
	return nil
}

// Popularity draws torrent indexes in [0, N) with the shape of aquatic_udp_load_test's default:
// torrent i has weight floor + e^(6.5 - 500*i/N), an exponential head over the first ~1% of the
// pool on top of a flat floor. It samples the mixture exactly: the head is a geometric
// distribution (the floor of an exponential), the floor is uniform.
type Popularity struct {
	n        int
	rate     float64 // 500/N
	headMass float64 // probability of drawing from the head
}

// NewPopularity returns the distribution over n torrents for a population of peers peers; the
// floor weight is n/peers, as in aquatic.
func NewPopularity(n, peers int) Popularity {
	if n < 1 {
		n = 1
	}
	if peers < 1 {
		peers = 1
	}
	rate := 500 / float64(n)
	// Sum over i of e^(6.5 - rate*i) for i in [0, n): a geometric series.
	head := math.Exp(6.5) * (1 - math.Exp(-rate*float64(n))) / (1 - math.Exp(-rate))
	floor := float64(n) / float64(peers) * float64(n)
	return Popularity{n: n, rate: rate, headMass: head / (head + floor)}
}

// Draw returns a torrent index.
func (p Popularity) Draw(r *rand.Rand) int {
	if r.Float64() < p.headMass {
		for {
			i := int(r.ExpFloat64() / p.rate)
			if i < p.n {
				return i
			}
		}
	}
	return r.IntN(p.n)
}

// Peer addressing. Peer i announces from source IP 127.0.0.(FirstHost + i%hosts) with port
// FirstPort + (i/hosts)%PortsPerHost, so every peer has its own ip:port as long as there are at
// most hosts*PortsPerHost of them.
const (
	FirstHost    = 2
	MaxHosts     = 253 // 127.0.0.2 .. 127.0.0.254
	FirstPort    = 1024
	PortsPerHost = 65536 - FirstPort
)

// PeerHost returns the index (0-based, from 127.0.0.FirstHost) of peer i's source address.
func PeerHost(i, hosts int) int { return i % hosts }

// PeerPort returns peer i's announced port.
func PeerPort(i, hosts int) uint16 { return uint16(FirstPort + (i/hosts)%PortsPerHost) }

// HostIP returns the loopback address of host index h.
func HostIP(h int) [4]byte { return [4]byte{127, 0, 0, byte(FirstHost + h)} }

// PeerID returns peer i's peer ID: an Azureus-style prefix and i in hex, printable so that it
// needs no escaping.
func PeerID(i int) [20]byte {
	var id [20]byte
	copy(id[:], "-BN0001-")
	const digits = "0123456789abcdef"
	v := uint64(i)
	for k := 19; k >= 8; k-- {
		id[k] = digits[v&15]
		v >>= 4
	}
	return id
}

// IsSeeder reports whether peer i is a seeder: three in four are, as in aquatic's default
// peer_seeder_probability of 0.75. It is fixed per peer, so a peer never flips.
func IsSeeder(i int) bool { return splitmix64(uint64(i))&3 != 0 }

// FillSeeder reports whether peer j of a memory fill (the j-th peer announced, sent to torrent
// j mod torrents) is a seeder: the even-numbered peers of each torrent are (j/torrents even),
// so that a torrent of n peers holds ceil(n/2) seeders and floor(n/2) leechers, and a torrent
// of one peer is seeded.
func FillSeeder(j, torrents int) bool { return (j/max(1, torrents))%2 == 0 }

// FillCounts returns the seeders and leechers a fill of peers over torrents sends to torrent t.
func FillCounts(peers, torrents, t int) (seeders, leechers int) {
	torrents = max(1, torrents)
	n := peers / torrents
	if t < peers%torrents {
		n++
	}
	return (n + 1) / 2, n / 2
}

// PasskeyLen is the length of a Gazelle passkey (torrent_pass).
const PasskeyLen = 32

// Passkey returns the passkey of user u (0-based) of the private workloads: u+1 in lowercase
// hex, 32 digits.
func Passkey(u int) [PasskeyLen]byte {
	var k [PasskeyLen]byte
	const digits = "0123456789abcdef"
	v := uint64(u + 1)
	for i := PasskeyLen - 1; i >= 0; i-- {
		k[i] = digits[v&15]
		v >>= 4
	}
	return k
}

// PeerUser returns the user (0-based) whose passkey peer i announces with in the private
// workloads: each user holds ten consecutive peers, and users wrap around after users.
func PeerUser(i, users int) int { return (i / 10) % max(1, users) }
