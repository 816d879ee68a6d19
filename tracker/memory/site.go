package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

var _ tracker.SiteStore = (*Pool)(nil)

// userShards spreads users over several locks, so that passkey lookups from many cores rarely
// meet on one.
const userShards = 64

// site is the private-mode state that is not per torrent: users, whitelist, deletion reasons.
type site struct {
	seed  maphash.Seed
	users [userShards]struct {
		mu        sync.RWMutex
		byPasskey map[string]models.User
	}
	whitelist atomic.Pointer[[][]byte]

	reasonsMu sync.Mutex
	reasons   map[models.InfoHash]reason
}

type reason struct {
	text string
	at   time.Time
}

func (s *site) init() {
	s.seed = maphash.MakeSeed()
	for i := range s.users {
		s.users[i].byPasskey = make(map[string]models.User)
	}
	s.whitelist.Store(&[][]byte{})
	s.reasons = make(map[models.InfoHash]reason)
}

func (s *site) userShard(passkey string) int {
	return int(maphash.String(s.seed, passkey) % userShards)
}

// siteTorrent is what the site says of a registered torrent, and the accounting sessions of
// its peers.
type siteTorrent struct {
	id        uint64
	freeleech models.FreeleechType
	tokens    map[uint32]struct{}
	// sessions hold each peer's counters by peer ID and user, shared by the peer's IPv4 and
	// IPv6 entries (so a dual-stacked client is credited once) and kept after the entries are
	// stopped or reaped, so that the next announce is credited from there.
	sessions map[sessionKey]*session
}

type sessionKey struct {
	id   models.PeerID
	user uint32
}

type session struct {
	uploaded, downloaded, corrupt int64
	first, last                   int64 // unix seconds
	announces                     int
}

// announce fills res with the torrent's site attributes and the peer's previous session, and
// records the new counters. It runs under the torrent's shard lock.
func (st *siteTorrent) announce(u *tracker.PeerUpdate, res *tracker.AnnounceResult) {
	res.TorrentID, res.Freeleech = st.id, st.freeleech
	_, res.Token = st.tokens[u.Key.User]
	key := sessionKey{id: u.Key.ID, user: u.Key.User}
	now := u.Time.Unix()
	se := st.sessions[key]
	if se == nil {
		se = &session{first: now}
		st.sessions[key] = se
	} else {
		res.Prev.Restored = !res.Prev.Found
		res.Prev.Uploaded, res.Prev.Downloaded, res.Prev.Corrupt = se.uploaded, se.downloaded, se.corrupt
		res.Prev.Time = time.Unix(se.last, 0)
		res.Prev.FirstSeen = time.Unix(se.first, 0)
		res.Prev.Announces = se.announces
	}
	se.uploaded, se.downloaded, se.corrupt, se.last = u.Uploaded, u.Downloaded, u.Corrupt, now
	if !u.Secondary {
		se.announces++
	}
}

// User implements tracker.SiteStore.
func (p *Pool) User(_ context.Context, passkey string) (models.User, error) {
	sh := &p.site.users[p.site.userShard(passkey)]
	sh.mu.RLock()
	u, ok := sh.byPasskey[passkey]
	sh.mu.RUnlock()
	if !ok {
		return models.User{}, models.ErrPasskeyNotFound
	}
	return u, nil
}

// Whitelisted implements tracker.SiteStore.
func (p *Pool) Whitelisted(_ context.Context, id models.PeerID) (bool, error) {
	return id.Admitted(*p.site.whitelist.Load()), nil
}

// DeletionReason implements tracker.SiteStore.
func (p *Pool) DeletionReason(_ context.Context, ih models.InfoHash) (string, time.Time, bool, error) {
	p.site.reasonsMu.Lock()
	r, ok := p.site.reasons[ih]
	p.site.reasonsMu.Unlock()
	return r.text, r.at, ok, nil
}

func (p *Pool) putUser(u models.User) {
	sh := &p.site.users[p.site.userShard(u.Passkey)]
	sh.mu.Lock()
	sh.byPasskey[u.Passkey] = u
	sh.mu.Unlock()
}

func (p *Pool) removeUser(passkey string) (models.User, bool) {
	sh := &p.site.users[p.site.userShard(passkey)]
	sh.mu.Lock()
	u, ok := sh.byPasskey[passkey]
	delete(sh.byPasskey, passkey)
	sh.mu.Unlock()
	return u, ok
}

// hideUser hides every peer of the user uid from the swarms at once, as Ocelot stops handing
// out a removed user's peers: a banned user must not keep taking part through peers already in
// the swarms. The entries stay (counted, as in Ocelot, until they are reaped or the user is
// added again and announces). It reads every swarm, one shard lock at a time, which is the
// price of a removal rather than of every announce.
func (p *Pool) hideUser(uid uint32) {
	if uid == 0 {
		return
	}
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		for ti := range s.recs {
			t := &s.recs[ti]
			users := t.users()
			if !t.used || users == nil {
				continue
			}
			ents := t.ents()
			for j := range ents {
				if users[j] == uid {
					ents[j].flags |= flagHidden
				}
			}
		}
		s.mu.Unlock()
	}
}

// withTorrent runs f on the torrent under its shard lock; f gets nil for an unknown torrent.
func (p *Pool) withTorrent(ih models.InfoHash, f func(s *shard, t *torrent)) {
	s := p.shardFor(ih)
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s, s.get(ih))
}

func newSiteTorrent(id uint64, fl models.FreeleechType) *siteTorrent {
	return &siteTorrent{id: id, freeleech: fl, tokens: map[uint32]struct{}{}, sessions: map[sessionKey]*session{}}
}

// register makes ih a registered torrent, keeping its peers if it was known. It fails only
// when the shard is full.
func (s *shard) register(ih models.InfoHash, tor models.Torrent) (*torrent, error) {
	t := s.get(ih)
	if t == nil {
		var err error
		if t, err = s.add(ih); err != nil {
			return nil, fmt.Errorf("register torrent %x: %w", ih[:], err)
		}
		t.snatches = uint32(min(max(tor.Snatches, 0), math.MaxUint32))
	}
	x := t.ext()
	if x.site == nil {
		x.site = newSiteTorrent(tor.ID, tor.Freeleech)
	}
	x.site.id, x.site.freeleech = tor.ID, tor.Freeleech
	return t, nil
}

// UpdateSite implements tracker.SiteStore.
func (p *Pool) UpdateSite(_ context.Context, u *models.SiteUpdate) error {
	switch u.Action {
	case models.AddUser:
		p.putUser(u.User)
	case models.UpdateUser:
		sh := &p.site.users[p.site.userShard(u.User.Passkey)]
		sh.mu.Lock()
		old, ok := sh.byPasskey[u.User.Passkey]
		if ok {
			old.CanLeech, old.Protected = u.User.CanLeech, u.User.Protected
			sh.byPasskey[u.User.Passkey] = old
		}
		sh.mu.Unlock()
		if !ok {
			return fmt.Errorf("memory: update user: %w", models.ErrPasskeyNotFound)
		}
	case models.RemoveUser:
		if old, ok := p.removeUser(u.User.Passkey); ok {
			p.hideUser(uint32(old.ID))
		}
	case models.ChangePasskey:
		old, ok := p.removeUser(u.User.Passkey)
		if !ok {
			return fmt.Errorf("memory: change passkey: %w", models.ErrPasskeyNotFound)
		}
		old.Passkey = u.NewPasskey
		p.putUser(old)
	case models.AddTorrent:
		var err error
		p.withTorrent(u.Torrent.InfoHash, func(s *shard, _ *torrent) { _, err = s.register(u.Torrent.InfoHash, u.Torrent) })
		if err != nil {
			return fmt.Errorf("memory: add torrent: %w", err)
		}
		p.site.reasonsMu.Lock()
		delete(p.site.reasons, u.Torrent.InfoHash)
		p.site.reasonsMu.Unlock()
	case models.UpdateTorrent:
		var err error
		p.withTorrent(u.Torrent.InfoHash, func(_ *shard, t *torrent) {
			if t == nil || t.x == nil || t.x.site == nil {
				err = models.ErrTorrentNotFound
				return
			}
			t.x.site.freeleech = u.Torrent.Freeleech
		})
		if err != nil {
			return fmt.Errorf("memory: update torrent: %w", err)
		}
	case models.DeleteTorrent:
		p.withTorrent(u.Torrent.InfoHash, func(s *shard, _ *torrent) { s.drop(u.Torrent.InfoHash) })
		p.site.reasonsMu.Lock()
		p.site.reasons[u.Torrent.InfoHash] = reason{text: u.Reason, at: time.Now()}
		p.site.reasonsMu.Unlock()
	case models.AddToken, models.RemoveToken:
		var err error
		p.withTorrent(u.Torrent.InfoHash, func(_ *shard, t *torrent) {
			if t == nil || t.x == nil || t.x.site == nil {
				err = models.ErrTorrentNotFound
				return
			}
			if u.Action == models.AddToken {
				t.x.site.tokens[uint32(u.User.ID)] = struct{}{}
			} else {
				delete(t.x.site.tokens, uint32(u.User.ID))
			}
		})
		if err != nil {
			return fmt.Errorf("memory: token: %w", err)
		}
	case models.AddWhitelist, models.EditWhitelist, models.RemoveWhitelist:
		p.editWhitelist(u)
	default:
		return fmt.Errorf("memory: unknown site action %d", u.Action)
	}
	return nil
}

// editWhitelist replaces the whitelist with a changed copy; readers never lock.
func (p *Pool) editWhitelist(u *models.SiteUpdate) {
	for {
		cur := p.site.whitelist.Load()
		next := make([][]byte, 0, len(*cur)+1)
		for _, prefix := range *cur {
			switch {
			case u.Action != models.AddWhitelist && string(prefix) == u.Prefix:
				if u.Action == models.EditWhitelist {
					next = append(next, []byte(u.NewPrefix))
				}
			default:
				next = append(next, prefix)
			}
		}
		if u.Action == models.AddWhitelist {
			next = append(next, []byte(u.Prefix))
		}
		if p.site.whitelist.CompareAndSwap(cur, &next) {
			return
		}
	}
}

// ReplaceSite implements tracker.SiteStore.
func (p *Pool) ReplaceSite(_ context.Context, st *models.SiteState) error {
	// Build the new users first and swap each shard's map whole, so that a user who is in
	// both the old and the new state is never missing to a concurrent announce.
	users := make([]map[string]models.User, userShards)
	for i := range users {
		users[i] = make(map[string]models.User)
	}
	for _, u := range st.Users {
		users[p.site.userShard(u.Passkey)][u.Passkey] = u
	}
	for i := range p.site.users {
		sh := &p.site.users[i]
		sh.mu.Lock()
		sh.byPasskey = users[i]
		sh.mu.Unlock()
	}

	wl := make([][]byte, 0, len(st.Whitelist))
	for _, prefix := range st.Whitelist {
		wl = append(wl, []byte(prefix))
	}
	p.site.whitelist.Store(&wl)

	registered := make(map[models.InfoHash]models.Torrent, len(st.Torrents))
	byID := make(map[uint64]models.InfoHash, len(st.Torrents))
	for _, t := range st.Torrents {
		registered[t.InfoHash] = t
		byID[t.ID] = t.InfoHash
	}
	tokens, baselines := st.ByTorrent()

	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		// drop lets go of the slab with the shard's last torrent: len is read each time.
		for ti := 0; ti < len(s.recs); ti++ {
			if t := &s.recs[ti]; t.used && t.x != nil && t.x.site != nil {
				if _, ok := registered[t.ih]; !ok {
					s.drop(t.ih) // no longer on the site
				}
			}
		}
		s.mu.Unlock()
	}
	for ih, tor := range registered {
		s := p.shardFor(ih)
		s.mu.Lock()
		t, err := s.register(ih, tor)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("memory: replace site: %w", err)
		}
		st := t.x.site
		clear(st.tokens)
		for _, uid := range tokens[tor.ID] {
			st.tokens[uid] = struct{}{}
		}
		for _, b := range baselines[tor.ID] {
			key := sessionKey{id: b.PeerID, user: uint32(b.UserID)}
			if _, ok := st.sessions[key]; ok {
				continue // what this process saw is newer than what the site stored
			}
			st.sessions[key] = &session{
				uploaded: b.Uploaded, downloaded: b.Downloaded, corrupt: b.Corrupt,
				first: b.FirstSeen.Unix(), last: b.LastSeen.Unix(), announces: b.Announces,
			}
		}
		s.mu.Unlock()
	}
	return nil
}

// UserPeers implements tracker.SiteStore. It reads every swarm, so it is for reports only.
func (p *Pool) UserPeers(ctx context.Context, userID uint64) (leeching, seeding int, err error) {
	uid := uint32(userID)
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		s := &p.shards[i]
		s.mu.RLock()
		for ti := range s.recs {
			t := &s.recs[ti]
			for j := range t.ents() {
				if t.user(j) != uid {
					continue
				}
				if j < t.seeders() {
					seeding++
				} else {
					leeching++
				}
			}
		}
		s.mu.RUnlock()
	}
	return leeching, seeding, nil
}

// Prune implements tracker.SiteStore.
func (p *Pool) Prune(ctx context.Context, reasonsBefore, baselinesBefore time.Time) error {
	p.site.reasonsMu.Lock()
	for ih, r := range p.site.reasons {
		if r.at.Before(reasonsBefore) {
			delete(p.site.reasons, ih)
		}
	}
	p.site.reasonsMu.Unlock()
	limit := baselinesBefore.Unix()
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &p.shards[i]
		s.mu.Lock()
		for ti := range s.recs {
			t := &s.recs[ti]
			if !t.used || t.x == nil || t.x.site == nil {
				continue
			}
			for k, se := range t.x.site.sessions {
				if se.last < limit {
					delete(t.x.site.sessions, k)
				}
			}
		}
		s.mu.Unlock()
	}
	return nil
}
