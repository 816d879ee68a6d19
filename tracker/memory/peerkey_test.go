package memory

import (
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// TestMain gives every pool of the tests one key seed, so that peerIDOf builds its table once.
// The tests of seeds themselves make their own.
func TestMain(m *testing.M) {
	poolIDs = func() idHasher { return idHasher{seed: 0x5eed} }
	os.Exit(m.Run())
}

// reverse maps the keys of pid(0) to pid(maxReverse-1) back to their IDs, per seed, so that
// tests can name the peers a pool stores by the numbers they announced them with.
var reverse struct {
	sync.Mutex
	bySeed map[uint64]map[idKey]models.PeerID
}

const maxReverse = 1 << 16

// peerIDOf returns the test peer ID whose key in p is k, failing tb when none is.
func peerIDOf(tb testing.TB, p *Pool, k idKey) models.PeerID {
	tb.Helper()
	reverse.Lock()
	defer reverse.Unlock()
	m := reverse.bySeed[p.ids.seed]
	if m == nil {
		if reverse.bySeed == nil {
			reverse.bySeed = make(map[uint64]map[idKey]models.PeerID)
		}
		m = make(map[idKey]models.PeerID, maxReverse)
		for n := range maxReverse {
			id := pid(n)
			m[p.ids.idKey(&id)] = id
		}
		reverse.bySeed[p.ids.seed] = m
	}
	id, ok := m[k]
	require.True(tb, ok, "key %x is none of the test peers'", k[:])
	return id
}

func TestStampAt(t *testing.T) {
	const day = 24 * 3600
	ref := t0.Unix()
	tests := []struct {
		name string
		seen int64
	}{
		{"now", ref},
		{"a second ago", ref - 1},
		{"an hour ago", ref - 3600},
		{"a second ahead (clock went back)", ref + 1},
		{"96 days ago", ref - 96*day},
		{"96 days ahead", ref + 96*day},
		{"just under 2^23 s ago", ref - (1<<23 - 1)},
		{"at the wrap of the low 24 bits", ref - ref&stampMask - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.seen, stampOf(tt.seen).at(ref))
		})
	}
	// Past 2^23 seconds the nearest time with the stamp is the other way round.
	assert.Equal(t, ref-(1<<23)+(1<<24), stampOf(ref-(1<<23)).at(ref), "2^23 s ago reads as 2^23 s ahead")
}

func TestIDKey(t *testing.T) {
	a, b := newIDHasher(), newIDHasher()
	require.NotEqual(t, a.seed, b.seed, "seeds are random")
	id1, id2 := pid(1), pid(2)
	assert.Equal(t, a.idKey(&id1), a.idKey(&id1), "a key is a function of the ID")
	assert.NotEqual(t, a.idKey(&id1), a.idKey(&id2))
	assert.NotEqual(t, a.idKey(&id1), b.idKey(&id1), "another seed, another key")

	// 2^16 IDs that differ in one byte or two: 48-bit keys collide with probability about
	// 2^32/2^49, so a collision here says the hash is broken, not unlucky.
	seen := make(map[idKey]int, maxReverse)
	for n := range maxReverse {
		id := pid(n)
		k := a.idKey(&id)
		prev, dup := seen[k]
		require.False(t, dup, "pid(%d) and pid(%d) share key %x", prev, n, k[:])
		seen[k] = n
	}

	k := a.key(models.PeerKey{ID: id1, Family: models.IPv6, User: 9})
	assert.Equal(t, swarmKey{id: a.idKey(&id1), v6: true, user: 9}, k)
	assert.Equal(t, models.IPv6, k.family())
}
