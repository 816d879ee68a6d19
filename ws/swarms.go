package ws

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"

	"github.com/chihaya/chihaya/tracker/models"
)

// The local index: which connection of this process speaks for each WebRTC peer of each
// swarm. It is what offers and answers are relayed through; counts live in the core's driver
// like every other peer's.

const numShards = 64

type member struct {
	id models.PeerID
	c  *conn
}

// swarm is one torrent's WebRTC peers on this process: a slice to pick random peers from, and
// an index by peer ID into it.
type swarm struct {
	members []member
	byID    map[models.PeerID]int
}

type shard struct {
	mu     sync.RWMutex
	swarms map[models.InfoHash]*swarm
}

type index struct {
	seed   maphash.Seed
	shards [numShards]shard
}

func newIndex() *index {
	x := &index{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].swarms = make(map[models.InfoHash]*swarm)
	}
	return x
}

func (x *index) shard(ih *models.InfoHash) *shard {
	return &x.shards[maphash.Bytes(x.seed, ih[:])%numShards]
}

// join records that c speaks for peer id in ih's swarm; a peer ID that another connection held
// moves to c (the newer socket wins, as a reconnecting browser's).
func (x *index) join(ih *models.InfoHash, id *models.PeerID, c *conn) {
	sh := x.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.swarms[*ih]
	if sw == nil {
		sw = &swarm{byID: make(map[models.PeerID]int)}
		sh.swarms[*ih] = sw
	}
	if i, ok := sw.byID[*id]; ok {
		sw.members[i].c = c
		return
	}
	sw.byID[*id] = len(sw.members)
	sw.members = append(sw.members, member{id: *id, c: c})
}

// leave removes peer id from ih's swarm if c still speaks for it; it reports whether it did.
func (x *index) leave(ih *models.InfoHash, id *models.PeerID, c *conn) bool {
	sh := x.shard(ih)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.swarms[*ih]
	if sw == nil {
		return false
	}
	i, ok := sw.byID[*id]
	if !ok || sw.members[i].c != c {
		return false
	}
	last := len(sw.members) - 1
	if i != last {
		sw.members[i] = sw.members[last]
		sw.byID[sw.members[i].id] = i
	}
	sw.members[last] = member{}
	sw.members = sw.members[:last]
	delete(sw.byID, *id)
	if len(sw.members) == 0 {
		delete(sh.swarms, *ih)
	}
	return true
}

// lookup returns the connection that speaks for peer id in ih's swarm, or nil.
func (x *index) lookup(ih *models.InfoHash, id *models.PeerID) *conn {
	sh := x.shard(ih)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	sw := sh.swarms[*ih]
	if sw == nil {
		return nil
	}
	if i, ok := sw.byID[*id]; ok {
		return sw.members[i].c
	}
	return nil
}

// pick appends to dst up to n distinct random members of ih's swarm, never self.
func (x *index) pick(ih *models.InfoHash, self *models.PeerID, n int, dst []member) []member {
	sh := x.shard(ih)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	sw := sh.swarms[*ih]
	if sw == nil || n <= 0 {
		return dst
	}
	others := len(sw.members)
	skip := -1
	if i, ok := sw.byID[*self]; ok {
		skip = i
		others--
	}
	if others <= n {
		for i, m := range sw.members {
			if i != skip {
				dst = append(dst, m)
			}
		}
		return dst
	}
	// A random start and a random stride coprime with the length visits distinct members.
	l := len(sw.members)
	start, stride := rand.IntN(l), 1+rand.IntN(l-1)
	for gcd(stride, l) != 1 {
		stride = 1 + rand.IntN(l-1)
	}
	for i, k := start, 0; k < l && n > 0; i, k = (i+stride)%l, k+1 {
		if i == skip {
			continue
		}
		dst = append(dst, sw.members[i])
		n--
	}
	return dst
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// peers returns how many WebRTC peers this process holds, over all swarms.
func (x *index) peers() (n int) {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		for _, sw := range sh.swarms {
			n += len(sw.members)
		}
		sh.mu.RUnlock()
	}
	return n
}

// held appends to ihs the info hash of every swarm this process holds peers of, and to ids
// their IDs, swarm after swarm; ends[i] is where the IDs of ihs[i] end in ids.
func (x *index) held(ihs []models.InfoHash, ids []models.PeerID, ends []int) ([]models.InfoHash, []models.PeerID, []int) {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		for ih, sw := range sh.swarms {
			ihs = append(ihs, ih)
			for _, m := range sw.members {
				ids = append(ids, m.id)
			}
			ends = append(ends, len(ids))
		}
		sh.mu.RUnlock()
	}
	return ihs, ids, ends
}
