package memory

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/zeebo/xxh3"

	"github.com/chihaya/chihaya/tracker/models"
)

// idKey is a peer's identity in a swarm: 48 bits of the pool's keyed hash of its 20-byte peer
// ID. A swarm needs the ID only to tell its peers apart, and never hands it out (dictionary
// answers leave "peer id" out, as opentracker's do and BEP 23's no_peer_id allows), so an entry
// keeps 6 bytes where the ID takes 20.
//
// Two peer IDs of one family and user share a key with probability 2^-48, so a swarm of n
// peers holds such a pair with probability about n²/2^49: 1.8e-11 for 100 peers, 1.8e-7 for
// 10,000, 0.18% for a million. A pair that collides is one peer to the swarm: each announce
// moves the entry to the announcer's address, and one of the two is handed out at a time. The
// key is seeded at random per pool, and never leaves the process but in snapshots, so that
// peer IDs cannot be chosen to collide.
type idKey [6]byte

// swarmKey is a peer's key in a swarm: models.PeerKey with its ID hashed.
type swarmKey struct {
	id   idKey
	v6   bool
	user uint32
}

// idHasher turns peer IDs into idKeys with its seed. A pool's seed is written into its
// snapshots and taken back by Restore, so that a restarted process keys its peers as before.
type idHasher struct {
	seed uint64
}

// poolIDs makes a new pool's hasher; tests fix its seed.
var poolIDs = newIDHasher

func newIDHasher() idHasher {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on the platforms Go supports
	return idHasher{seed: binary.LittleEndian.Uint64(b[:])}
}

// idKey returns id's key.
func (h idHasher) idKey(id *models.PeerID) idKey {
	v := xxh3.HashSeed(id[:], h.seed)
	var k idKey
	k[0], k[1], k[2], k[3], k[4], k[5] = byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	return k
}

// key returns k with its ID hashed.
func (h idHasher) key(k models.PeerKey) swarmKey {
	return swarmKey{id: h.idKey(&k.ID), v6: k.Family == models.IPv6, user: k.User}
}

// family returns the address family of k.
func (k *swarmKey) family() models.Family {
	if k.v6 {
		return models.IPv6
	}
	return models.IPv4
}

// An entry's last announce is a stamp: unix seconds modulo 2^24 (194 days). A stamp is read
// back against a time near it, as the nearest time with that stamp: the announce's own time, or
// its shard's latest announce (shard.newest) for the reaper and snapshots. That is right while
// the entry was last seen within 2^23 seconds (97 days) of that time; the reaper removes an
// entry within peer_timeout and one reaping pass of its last announce.
const (
	stampBits = 24
	stampMask = 1<<stampBits - 1
)

type stamp [3]byte

func stampOf(unix int64) stamp {
	return stamp{byte(unix), byte(unix >> 8), byte(unix >> 16)}
}

func (s stamp) bits() uint32 { return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 }

// at returns the unix time, nearest to ref, whose stamp is s.
func (s stamp) at(ref int64) int64 {
	d := int32((stampOf(ref).bits()-s.bits())<<(32-stampBits)) >> (32 - stampBits)
	return ref - int64(d)
}
