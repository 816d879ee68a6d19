//go:build linux && !race

package ws

// Allocation counts are meaningless under the race detector, whose sync.Pool drops what it is
// given at random.

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestAnnounceAllocs: once warm, an announce with offers, answered and relayed, allocates
// nothing.
func TestAnnounceAllocs(t *testing.T) {
	s, conns := benchSwarm(t, 20)
	msg := announceMessage('A', 5, 500)
	buf := make([]byte, len(msg))
	allocs := testing.AllocsPerRun(200, func() {
		copy(buf, msg)
		sc := s.getScratch()
		s.handle(conns[0], buf, sc)
		sc.flushAll()
		sc.release()
	})
	assert.Zero(t, allocs)
	assert.Zero(t, s.m.failures.Load())
}
