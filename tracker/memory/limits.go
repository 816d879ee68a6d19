package memory

import (
	"sync/atomic"

	"github.com/chihaya/chihaya/tracker/models"
)

// usage counts the pool's torrents and peers for its limits. Only a pool with a limit keeps
// one: counting costs two atomic additions where a peer or torrent comes or goes, which a pool
// without limits does not pay. The shards update it under their own locks, so the sum is
// exact once they are done; a check against it may let through as many extra peers as there
// are announces adding one at that moment.
type usage struct {
	maxTorrents, maxPeers int64
	torrents, peers       atomic.Int64
}

// admit returns the failure for an announce that adds a peer, and a torrent when newTorrent,
// or nil when the pool has room.
func (u *usage) admit(newTorrent bool) error {
	if u == nil {
		return nil
	}
	if newTorrent && u.maxTorrents > 0 && u.torrents.Load() >= u.maxTorrents {
		return models.ErrTorrentLimit
	}
	if u.maxPeers > 0 && u.peers.Load() >= u.maxPeers {
		return models.ErrPeerLimit
	}
	return nil
}

func (u *usage) addPeers(n int) {
	if u != nil && n != 0 {
		u.peers.Add(int64(n))
	}
}

func (u *usage) addTorrents(n int) {
	if u != nil {
		u.torrents.Add(int64(n))
	}
}
