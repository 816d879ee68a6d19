package redis

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/tracker/models"
)

// maxCachedUsers bounds the user cache; when it is full it starts over, so that a flood of
// made-up passkeys costs memory only up to this.
const maxCachedUsers = 1 << 18

// siteCache holds what a private announce reads outside the torrent's slot: users by passkey
// (unknown passkeys too) and the whitelist, each until its expiry (unix ns). gen changes on
// every invalidation, so that a lookup that raced one does not store what it read before it.
type siteCache struct {
	ttl      time.Duration
	maxUsers int

	mu        sync.RWMutex
	gen       uint64
	users     map[string]cachedUser
	whitelist [][]byte
	wlExpiry  int64
}

type cachedUser struct {
	user   models.User
	found  bool
	expiry int64
}

func (c *siteCache) init(ttl time.Duration) {
	c.ttl, c.maxUsers = ttl, maxCachedUsers
	c.users = make(map[string]cachedUser)
}

func (c *siteCache) user(passkey string, now int64) (cachedUser, bool) {
	if c.ttl <= 0 {
		return cachedUser{}, false
	}
	c.mu.RLock()
	u, ok := c.users[passkey]
	c.mu.RUnlock()
	return u, ok && now < u.expiry
}

// whitelistAt returns the cached whitelist and whether it is still fresh.
func (c *siteCache) whitelistAt(now int64) ([][]byte, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.whitelist, now < c.wlExpiry
}

func (c *siteCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// store caches what a lookup that started at generation gen read, unless an invalidation came
// in between. u is nil when no user was read, wl when no whitelist was.
func (c *siteCache) store(gen uint64, now int64, passkey string, u *cachedUser, wl *[][]byte) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	expiry := now + int64(c.ttl)
	if u != nil {
		if len(c.users) >= c.maxUsers {
			c.users = make(map[string]cachedUser)
		}
		u.expiry = expiry
		c.users[passkey] = *u
	}
	if wl != nil {
		c.whitelist, c.wlExpiry = *wl, expiry
	}
}

// invalidate drops the given passkeys (all users when all is set) and, with wl, the whitelist.
func (c *siteCache) invalidate(all, wl bool, passkeys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if all {
		c.users = make(map[string]cachedUser)
	}
	for _, pk := range passkeys {
		delete(c.users, pk)
	}
	if wl || all {
		c.whitelist, c.wlExpiry = nil, 0
	}
}

func encodeUser(u models.User) string {
	return strconv.FormatUint(u.ID, 10) + ":" + bit(u.CanLeech) + ":" + bit(u.Protected)
}

func decodeUser(passkey, v string) (models.User, error) {
	id, flags, ok := strings.Cut(v, ":")
	n, err := strconv.ParseUint(id, 10, 64)
	if !ok || err != nil || len(flags) != 3 {
		return models.User{}, fmt.Errorf("stored user %q", v)
	}
	return models.User{ID: n, Passkey: passkey, CanLeech: flags[0] == '1', Protected: flags[2] == '1'}, nil
}

func toPrefixes(list []string) [][]byte {
	out := make([][]byte, len(list))
	for i, s := range list {
		out[i] = []byte(s)
	}
	return out
}

// User implements tracker.SiteStore. A cache miss is one round trip, which also refreshes the
// whitelist when it is due, so that the announce's Whitelisted finds it cached.
func (p *Pool) User(ctx context.Context, passkey string) (models.User, error) {
	now := p.now().UnixNano()
	if c, ok := p.cache.user(passkey, now); ok {
		if !c.found {
			return models.User{}, models.ErrPasskeyNotFound
		}
		return c.user, nil
	}
	gen := p.cache.generation()
	_, wlFresh := p.cache.whitelistAt(now)
	var (
		hget  *goredis.StringCmd
		lrng  *goredis.StringSliceCmd
		err   error
		cache cachedUser
	)
	if wlFresh || p.cache.ttl <= 0 {
		hget = p.client.HGet(ctx, p.users, passkey)
		err = hget.Err()
	} else {
		_, err = p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
			hget = pipe.HGet(ctx, p.users, passkey)
			lrng = pipe.LRange(ctx, p.whitelist, 0, -1)
			return nil
		})
	}
	if err != nil && !errors.Is(err, goredis.Nil) {
		return models.User{}, p.fail(opSite, fmt.Errorf("redis: user: %w", err))
	}
	var wl *[][]byte
	if lrng != nil {
		list := toPrefixes(lrng.Val())
		wl = &list
	}
	if errors.Is(hget.Err(), goredis.Nil) {
		p.cache.store(gen, now, passkey, &cache, wl)
		return models.User{}, models.ErrPasskeyNotFound
	}
	if cache.user, err = decodeUser(passkey, hget.Val()); err != nil {
		return models.User{}, p.fail(opSite, fmt.Errorf("redis: user: %w", err))
	}
	cache.found = true
	p.cache.store(gen, now, passkey, &cache, wl)
	return cache.user, nil
}

// Whitelisted implements tracker.SiteStore, from the cache while it is fresh.
func (p *Pool) Whitelisted(ctx context.Context, id models.PeerID) (bool, error) {
	now := p.now().UnixNano()
	list, ok := p.cache.whitelistAt(now)
	if !ok {
		gen := p.cache.generation()
		v, err := p.client.LRange(ctx, p.whitelist, 0, -1).Result()
		if err != nil {
			return false, p.fail(opSite, fmt.Errorf("redis: whitelist: %w", err))
		}
		list = toPrefixes(v)
		p.cache.store(gen, now, "", nil, &list)
	}
	return id.Admitted(list), nil
}

// DeletionReason implements tracker.SiteStore.
func (p *Pool) DeletionReason(ctx context.Context, ih models.InfoHash) (string, time.Time, bool, error) {
	v, err := p.client.HGet(ctx, p.reasons, string(ih[:])).Result()
	if errors.Is(err, goredis.Nil) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, p.fail(opSite, fmt.Errorf("redis: deletion reason %x: %w", ih[:], err))
	}
	at, text, _ := strings.Cut(v, ":")
	ns, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return "", time.Time{}, false, p.fail(opSite, fmt.Errorf("redis: deletion reason %x: stored %q", ih[:], v))
	}
	return text, time.Unix(0, ns), true, nil
}

// siteErr wraps err with what failed and counts it.
func (p *Pool) siteErr(what string, err error) error {
	return p.fail(opSite, fmt.Errorf("redis: %s: %w", what, err))
}

// UpdateSite implements tracker.SiteStore. It drops what it changes from this process's cache.
func (p *Pool) UpdateSite(ctx context.Context, u *models.SiteUpdate) error {
	switch u.Action {
	case models.AddUser:
		defer p.cache.invalidate(false, false, u.User.Passkey)
		if err := p.client.HSet(ctx, p.users, u.User.Passkey, encodeUser(u.User)).Err(); err != nil {
			return p.siteErr("add user", err)
		}
	case models.UpdateUser:
		defer p.cache.invalidate(false, false, u.User.Passkey)
		ok, err := updateUserScript.Run(ctx, p.client, []string{p.users}, "update", u.User.Passkey,
			bit(u.User.CanLeech)+":"+bit(u.User.Protected)).Int()
		if err != nil {
			return p.siteErr("update user", err)
		}
		if ok == 0 {
			return fmt.Errorf("redis: update user: %w", models.ErrPasskeyNotFound)
		}
	case models.RemoveUser:
		defer p.cache.invalidate(false, false, u.User.Passkey)
		v, err := removeUserScript.Run(ctx, p.client, []string{p.users}, u.User.Passkey).Text()
		if err != nil {
			return p.siteErr("remove user", err)
		}
		if v == "" {
			return nil
		}
		old, err := decodeUser(u.User.Passkey, v)
		if err != nil {
			return p.siteErr("remove user", err)
		}
		return p.hideUser(ctx, old.ID)
	case models.ChangePasskey:
		defer p.cache.invalidate(false, false, u.User.Passkey, u.NewPasskey)
		ok, err := updateUserScript.Run(ctx, p.client, []string{p.users}, "rekey", u.User.Passkey, u.NewPasskey).Int()
		if err != nil {
			return p.siteErr("change passkey", err)
		}
		if ok == 0 {
			return fmt.Errorf("redis: change passkey: %w", models.ErrPasskeyNotFound)
		}
	case models.AddTorrent:
		return p.addTorrent(ctx, u.Torrent)
	case models.DeleteTorrent:
		return p.deleteTorrent(ctx, u.Torrent.InfoHash, u.Reason)
	case models.UpdateTorrent, models.AddToken, models.RemoveToken:
		action, value, what := "fl", strconv.Itoa(int(u.Torrent.Freeleech)), "update torrent"
		if u.Action != models.UpdateTorrent {
			action, value, what = "addtoken", strconv.FormatUint(uint64(uint32(u.User.ID)), 10), "token"
			if u.Action == models.RemoveToken {
				action = "rmtoken"
			}
		}
		k := p.torrentKeys(u.Torrent.InfoHash)
		ok, err := siteTorrentScript.Run(ctx, p.client, []string{k[keyTorrent], k[keyTokens]}, action, value).Int()
		if err != nil {
			return p.siteErr(what, err)
		}
		if ok == 0 {
			return fmt.Errorf("redis: %s: %w", what, models.ErrTorrentNotFound)
		}
	case models.AddWhitelist, models.EditWhitelist, models.RemoveWhitelist:
		defer p.cache.invalidate(false, true)
		var err error
		switch u.Action {
		case models.AddWhitelist:
			err = p.client.RPush(ctx, p.whitelist, u.Prefix).Err()
		case models.EditWhitelist:
			err = editWhitelistScript.Run(ctx, p.client, []string{p.whitelist}, u.Prefix, u.NewPrefix).Err()
		default:
			err = p.client.LRem(ctx, p.whitelist, 0, u.Prefix).Err()
		}
		if err != nil {
			return p.siteErr("whitelist", err)
		}
	default:
		return fmt.Errorf("redis: unknown site action %d", u.Action)
	}
	return nil
}

// registerArgs returns the register script's ARGV for tor with the given tokens and baselines.
func registerArgs(ih models.InfoHash, tor models.Torrent, replaceTokens, useIdx bool, tokens []uint32, baselines []models.Baseline) []any {
	args := make([]any, 0, 7+len(tokens)+3*len(baselines))
	args = append(args, strconv.FormatUint(tor.ID, 10), int(tor.Freeleech), tor.Snatches, bit(replaceTokens),
		string(ih[:]), bit(useIdx), len(tokens))
	for _, uid := range tokens {
		args = append(args, uid)
	}
	for _, b := range baselines {
		var sk [24]byte
		copy(sk[:20], b.PeerID[:])
		binary.BigEndian.PutUint32(sk[20:], uint32(b.UserID))
		last := b.LastSeen.Unix()
		val := fmt.Sprintf("%d:%d:%d:%d:%d:%d", b.Uploaded, b.Downloaded, b.Corrupt, b.FirstSeen.Unix(), last, b.Announces)
		args = append(args, string(sk[:]), val, last)
	}
	return args
}

// registerGlobal turns a register script's reply into what cluster mode applies afterwards.
func registerGlobal(ih models.InfoHash, v []any) global {
	g := global{ih: string(ih[:]), index: indexKeep, sessionAt: -1}
	if len(v) >= 3 {
		g.sessionAt = asInt(v[1])
		g.counts[0] = asInt(v[2])
	}
	return g
}

func (p *Pool) addTorrent(ctx context.Context, tor models.Torrent) error {
	ih := tor.InfoHash
	v, err := registerScript.Run(ctx, p.client, p.torrentKeys(ih), registerArgs(ih, tor, false, !p.cluster, nil, nil)...).Slice()
	if err != nil {
		return p.siteErr("add torrent", err)
	}
	var site [3]goredis.Cmder
	var rec globalCmds
	_, err = p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		site = [3]goredis.Cmder{
			pipe.SAdd(ctx, p.registered, string(ih[:])),
			pipe.HDel(ctx, p.reasons, string(ih[:])),
			pipe.ZRem(ctx, p.reasonTimes, string(ih[:])),
		}
		if p.cluster {
			p.queueGlobals(ctx, pipe, &rec, []global{registerGlobal(ih, v)}, nil, [5]int64{})
		}
		return nil
	})
	if p.cluster {
		// The script has run: what the global keys missed is deferred, as for an announce.
		p.settleGlobals(ctx, &rec, err)
	}
	if err := firstErr(site[:]); err != nil {
		return p.siteErr("add torrent", err)
	}
	return nil
}

// firstErr returns the first error of cmds.
func firstErr(cmds []goredis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// dropGlobal turns a drop script's reply into what cluster mode applies afterwards.
func dropGlobal(h string, v []any) global {
	g := global{ih: h, index: indexRemove, sessionAt: -1, removeSessions: true}
	if len(v) >= 6 {
		deltas(&g, v[1:6])
	}
	return g
}

func (p *Pool) deleteTorrent(ctx context.Context, ih models.InfoHash, reason string) error {
	h := string(ih[:])
	v, err := dropScript.Run(ctx, p.client, p.torrentKeys(ih), h, bit(!p.cluster), int(models.IPv4), "0").Slice()
	if err != nil {
		return p.siteErr("delete torrent", err)
	}
	at := p.now()
	var site [3]goredis.Cmder
	var rec globalCmds
	_, err = p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		site = [3]goredis.Cmder{
			pipe.SRem(ctx, p.registered, h),
			pipe.HSet(ctx, p.reasons, h, strconv.FormatInt(at.UnixNano(), 10)+":"+reason),
			pipe.ZAdd(ctx, p.reasonTimes, goredis.Z{Score: float64(at.UnixMicro()), Member: h}),
		}
		if p.cluster {
			p.queueGlobals(ctx, pipe, &rec, []global{dropGlobal(h, v)}, nil, [5]int64{})
		}
		return nil
	})
	if p.cluster {
		p.settleGlobals(ctx, &rec, err)
	}
	if err := firstErr(site[:]); err != nil {
		return p.siteErr("delete torrent", err)
	}
	return nil
}

// siteBatch is how many scripts one pipelined round trip of a site-wide operation carries.
const siteBatch = 256

// scriptCall is one script call of a batch.
type scriptCall struct {
	keys []string
	args []any
}

// runBatch runs calls of script in pipelines of siteBatch by EVALSHA, loading the script first
// (on every node in cluster mode), and hands each reply to done in order.
func (p *Pool) runBatch(ctx context.Context, s *goredis.Script, calls []scriptCall, done func(i int, v []any) error) error {
	if len(calls) == 0 {
		return nil
	}
	if err := s.Load(ctx, p.client).Err(); err != nil {
		return fmt.Errorf("load script: %w", err)
	}
	for lo := 0; lo < len(calls); lo += siteBatch {
		hi := min(lo+siteBatch, len(calls))
		cmds := make([]*goredis.Cmd, hi-lo)
		_, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
			for i := lo; i < hi; i++ {
				cmds[i-lo] = s.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range cmds {
			v, err := c.Slice()
			if err != nil {
				return err
			}
			if err := done(lo+i, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReplaceSite implements tracker.SiteStore. Users, the whitelist and the set of registered
// torrents are each swapped whole (built under a temporary key, then renamed), so that a user
// who is in both the old and the new state is never missing to a concurrent announce.
func (p *Pool) ReplaceSite(ctx context.Context, st *models.SiteState) error {
	defer p.cache.invalidate(true, true)
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	tmp := p.prefix + "{site}:tmp:" + hex.EncodeToString(nonce[:]) + ":"

	// Users.
	if err := p.replaceHash(ctx, p.users, tmp+"users", len(st.Users), func(i int) (string, string) {
		return st.Users[i].Passkey, encodeUser(st.Users[i])
	}); err != nil {
		return p.siteErr("replace site: users", err)
	}

	// Whitelist.
	if _, err := p.client.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Del(ctx, p.whitelist)
		if len(st.Whitelist) > 0 {
			list := make([]any, len(st.Whitelist))
			for i, s := range st.Whitelist {
				list[i] = s
			}
			pipe.RPush(ctx, p.whitelist, list...)
		}
		return nil
	}); err != nil {
		return p.siteErr("replace site: whitelist", err)
	}

	// Torrents no longer registered go with their peers.
	registered := make(map[models.InfoHash]bool, len(st.Torrents))
	for _, t := range st.Torrents {
		registered[t.InfoHash] = true
	}
	old, err := p.client.SMembers(ctx, p.registered).Result()
	if err != nil {
		return p.siteErr("replace site: registered", err)
	}
	var drops []scriptCall
	for _, h := range old {
		if len(h) != len(models.InfoHash{}) || registered[models.InfoHash([]byte(h))] {
			continue
		}
		ih := models.InfoHash([]byte(h))
		drops = append(drops, scriptCall{keys: p.torrentKeys(ih), args: []any{h, bit(!p.cluster), int(models.IPv4), "1"}})
	}
	var globals []global
	if err := p.runBatch(ctx, dropScript, drops, func(i int, v []any) error {
		if p.cluster {
			globals = append(globals, dropGlobal(drops[i].args[0].(string), v))
		}
		return nil
	}); err != nil {
		return p.siteErr("replace site: drop torrents", err)
	}

	// Registered torrents, their tokens and the baselines of their sessions.
	tokens, baselines := st.ByTorrent()
	regs := make([]scriptCall, len(st.Torrents))
	for i, t := range st.Torrents {
		regs[i] = scriptCall{
			keys: p.torrentKeys(t.InfoHash),
			args: registerArgs(t.InfoHash, t, true, !p.cluster, tokens[t.ID], baselines[t.ID]),
		}
	}
	if err := p.runBatch(ctx, registerScript, regs, func(i int, v []any) error {
		if p.cluster {
			globals = append(globals, registerGlobal(st.Torrents[i].InfoHash, v))
		}
		return nil
	}); err != nil {
		return p.siteErr("replace site: register torrents", err)
	}
	// What the global keys miss is deferred (and counted): see global.go.
	_ = p.applyGlobals(ctx, globals, 0)

	// The registered set, swapped whole.
	if err := p.replaceSet(ctx, p.registered, tmp+"registered", st.Torrents); err != nil {
		return p.siteErr("replace site: registered", err)
	}
	return nil
}

// replaceHash fills tmp with n fields from field and renames it over key (both under the
// {site} tag, so one slot); with n = 0 it deletes key.
func (p *Pool) replaceHash(ctx context.Context, key, tmp string, n int, field func(i int) (string, string)) error {
	if n == 0 {
		return p.client.Del(ctx, key).Err()
	}
	const perCmd = 1000
	if _, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Del(ctx, tmp)
		for lo := 0; lo < n; lo += perCmd {
			hi := min(lo+perCmd, n)
			kv := make([]any, 0, 2*(hi-lo))
			for i := lo; i < hi; i++ {
				f, v := field(i)
				kv = append(kv, f, v)
			}
			pipe.HSet(ctx, tmp, kv...)
		}
		pipe.Expire(ctx, tmp, time.Hour) // a crash before the rename leaves no litter
		return nil
	}); err != nil {
		return err
	}
	return p.client.Rename(ctx, tmp, key).Err()
}

// replaceSet makes key the set of the torrents' info hashes, through tmp.
func (p *Pool) replaceSet(ctx context.Context, key, tmp string, torrents []models.Torrent) error {
	if len(torrents) == 0 {
		return p.client.Del(ctx, key).Err()
	}
	const perCmd = 1000
	if _, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Del(ctx, tmp)
		for lo := 0; lo < len(torrents); lo += perCmd {
			hi := min(lo+perCmd, len(torrents))
			ms := make([]any, 0, hi-lo)
			for _, t := range torrents[lo:hi] {
				ms = append(ms, string(t.InfoHash[:]))
			}
			pipe.SAdd(ctx, tmp, ms...)
		}
		pipe.Expire(ctx, tmp, time.Hour)
		return nil
	}); err != nil {
		return err
	}
	return p.client.Rename(ctx, tmp, key).Err()
}

// UserPeers implements tracker.SiteStore. It counts in every swarm that has peers (read from
// the index, not by scanning the keyspace), a pipelined script per swarm, so like the memory
// driver's it costs in proportion to all peers and is for reports only.
func (p *Pool) UserPeers(ctx context.Context, userID uint64) (leeching, seeding int, err error) {
	calls, err := p.userCalls(ctx, userID, func(k []string) []string { return k[keySeeders : keyLeechers+1] })
	if err != nil {
		return 0, 0, p.siteErr("user peers: index", err)
	}
	err = p.runBatch(ctx, userPeersScript, calls, func(_ int, v []any) error {
		if len(v) < 2 {
			return errors.New("short script reply")
		}
		leeching += int(asInt(v[0]))
		seeding += int(asInt(v[1]))
		return nil
	})
	if err != nil {
		return 0, 0, p.siteErr("user peers", err)
	}
	return leeching, seeding, nil
}

// userCalls returns one script call per indexed torrent, on the keys pick takes of the
// torrent's, with the user ID (4 bytes, big endian) as the argument.
func (p *Pool) userCalls(ctx context.Context, userID uint64, pick func(keys []string) []string) ([]scriptCall, error) {
	hashes, err := p.client.ZRange(ctx, p.index, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	var ub [4]byte
	binary.BigEndian.PutUint32(ub[:], uint32(userID))
	calls := make([]scriptCall, 0, len(hashes))
	for _, h := range hashes {
		if len(h) != len(models.InfoHash{}) {
			continue
		}
		calls = append(calls, scriptCall{keys: pick(p.torrentKeys(models.InfoHash([]byte(h)))), args: []any{string(ub[:])}})
	}
	return calls, nil
}

// hideUser hides every peer of the user from the swarms at once, as Ocelot stops handing out a
// removed user's peers; the entries stay, counted, until they are reaped. Like UserPeers it
// runs a pipelined script on every swarm that has peers, so a removal costs in proportion to
// all peers (an announce costs nothing more).
func (p *Pool) hideUser(ctx context.Context, userID uint64) error {
	if userID == 0 {
		return nil
	}
	calls, err := p.userCalls(ctx, userID, func(k []string) []string {
		return []string{k[keySeeders], k[keyLeechers], k[keyPeers], k[keyTorrent]}
	})
	if err != nil {
		return p.siteErr("hide user: index", err)
	}
	if err := p.runBatch(ctx, hideUserScript, calls, func(int, []any) error { return nil }); err != nil {
		return p.siteErr("hide user", err)
	}
	return nil
}

// Prune implements tracker.SiteStore. Both parts read only what is due from a sorted index:
// deletion reasons by time, and the torrents whose oldest session may be older than
// baselinesBefore, each pruned by one pipelined script.
func (p *Pool) Prune(ctx context.Context, reasonsBefore, baselinesBefore time.Time) error {
	old, err := p.rangeBefore(ctx, p.reasonTimes, strconv.FormatInt(reasonsBefore.UnixMicro(), 10))
	if err != nil {
		return p.siteErr("prune: reasons", err)
	}
	if len(old) > 0 {
		ms := make([]any, len(old))
		for i, h := range old {
			ms[i] = h
		}
		if _, err := p.client.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
			pipe.HDel(ctx, p.reasons, old...)
			pipe.ZRem(ctx, p.reasonTimes, ms...)
			return nil
		}); err != nil {
			return p.siteErr("prune: reasons", err)
		}
	}

	limit := strconv.FormatInt(baselinesBefore.Unix(), 10)
	hashes, err := p.rangeBefore(ctx, p.sessions, limit)
	if err != nil {
		return p.siteErr("prune: session index", err)
	}
	calls := make([]scriptCall, 0, len(hashes))
	for _, h := range hashes {
		if len(h) != len(models.InfoHash{}) {
			continue
		}
		k := p.torrentKeys(models.InfoHash([]byte(h)))
		keys := []string{k[keySessions], k[keySessionTimes]}
		if !p.cluster {
			keys = append(keys, p.sessions)
		}
		calls = append(calls, scriptCall{keys: keys, args: []any{limit, h, bit(!p.cluster)}})
	}
	var globals []global
	if err := p.runBatch(ctx, pruneSessionsScript, calls, func(i int, v []any) error {
		if p.cluster && len(v) >= 2 {
			g := global{ih: calls[i].args[1].(string), index: indexKeep, sessionAt: -1}
			if oldest := asInt(v[1]); oldest < 0 {
				g.removeSessions = true
			} else {
				// The entry's score was below the cutoff: raise it to the real oldest.
				g.sessionAt, g.sessionExact = oldest, true
			}
			globals = append(globals, g)
		}
		return nil
	}); err != nil {
		return p.siteErr("prune: sessions", err)
	}
	_ = p.applyGlobals(ctx, globals, 0) // deferred and counted on failure: see global.go
	return nil
}
