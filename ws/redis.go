package ws

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"
	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/tracker/models"
)

// The relay between instances that share their swarms in Redis (the redis tracker driver).
//
// Each instance has an ID, a channel of its own (<prefix>ws:inst:<id>) it subscribes to, and
// a heartbeat in a sorted set (<prefix>ws:instances, scored by the time of its last beat). Each
// swarm's WebRTC peers are a hash (<prefix>ws:<info hash in hex>) from peer ID to the ID of the
// instance that holds the peer's socket. An offer goes to random fields of the swarm's hash
// (HRANDFIELD, distinct): to the local socket when the peer is this instance's, else published
// on the holder's channel, as is an answer to a peer another instance holds. Publishing goes
// through a bounded queue: when it is full a message is dropped and counted, and the announcer
// is never held up by Redis beyond its own request.
//
// A crashed instance leaves its entries behind; they go three ways. They are skipped, and
// deleted, when an offer meets them. A swarm's hash expires swarmTTL after the last instance
// that holds peers of it refreshed it: at a join, and every swarmTTL/4, when each instance
// writes again the entries of every peer it holds (on a goroutine of its own, so that a long
// refresh never makes a heartbeat late) and sets their hashes to live swarmTTL again. So the
// hash of a swarm only dead instances held is gone within swarmTTL. And when an instance sees
// another one stop beating, it deletes that one's entries from every swarm it holds peers of
// itself (purgeScript): the hashes that live on.

const (
	relayQueueLen  = 4096
	relayBatch     = 64
	heartbeatEvery = 5 * time.Second
	// instanceTTL is how long an instance counts as alive after its last heartbeat.
	instanceTTL = 4 * heartbeatEvery
	// forgetAfter is how long a silent instance is remembered as dead.
	forgetAfter = 24 * time.Hour
	// swarmTTL is how long a swarm's hash outlives the last refresh of an instance holding peers
	// of it.
	swarmTTL = 10 * time.Minute
	// refreshBatch is how many hashes one pipeline of a refresh or a purge touches.
	refreshBatch = 512
)

// purgeScript deletes a swarm's entries held by the instances ARGV (dead ones).
var purgeScript = goredis.NewScript(`
local dead = {}
for i = 1, #ARGV do dead[ARGV[i]] = true end
local kv = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #kv, 2 do
  if dead[kv[i+1]] then n = n + redis.call('HDEL', KEYS[1], kv[i]) end
end
return n`)

// leaveScript deletes a swarm's entry for a peer only if this instance still holds it: the
// peer's browser may have reconnected to another instance meanwhile.
var leaveScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0`)

type publication struct {
	channel string
	payload []byte
}

type redisRelay struct {
	s         *Server
	rdb       goredis.UniversalClient
	prefix    string
	id        string
	instances string

	out chan publication
	// beats holds the last heartbeat (unix nanoseconds) of every instance that has beaten. The
	// sorted set scores them in unix seconds, with a fraction.
	beats atomic.Pointer[map[string]int64]
	sub   *goredis.PubSub

	// The timing of heartbeats and of the swarms' hashes (the constants above; tests shorten
	// them).
	beatEvery, instanceTTL, swarmTTL time.Duration
	// purged holds the dead instances whose entries this instance deleted from the swarms it
	// holds peers of (the refresher's own; bounded by the instances Redis remembers).
	purged map[string]bool
	// beaten tells the refresher that a heartbeat went through.
	beaten chan struct{}
	// The refresher's room for the swarms this instance holds peers of (index.held).
	ihs  []models.InfoHash
	ids  []models.PeerID
	ends []int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// relayTiming sets the relay's heartbeat period and the swarms' time to live (tests).
type relayTiming struct{ beat, instanceTTL, swarmTTL time.Duration }

// WithRedis has the server relay offers and answers to the peers of other instances through
// rdb, with its keys under prefix (the redis driver's key_prefix).
func WithRedis(rdb goredis.UniversalClient, prefix string) Option {
	return func(s *Server) { s.redis, s.redisPrefix = rdb, prefix }
}

func newRedisRelay(s *Server, rdb goredis.UniversalClient, prefix string) (*redisRelay, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := &redisRelay{
		s: s, rdb: rdb, prefix: prefix, id: hex.EncodeToString(b[:]),
		instances: prefix + "ws:instances",
		out:       make(chan publication, relayQueueLen),
		beatEvery: heartbeatEvery, instanceTTL: instanceTTL, swarmTTL: swarmTTL,
		purged: make(map[string]bool), beaten: make(chan struct{}, 1),
	}
	if t := s.relayTiming; t != nil {
		r.beatEvery, r.instanceTTL, r.swarmTTL = t.beat, t.instanceTTL, t.swarmTTL
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	r.sub = rdb.Subscribe(ctx, r.channel(r.id))
	if _, err := r.sub.Receive(ctx); err != nil {
		_ = r.sub.Close()
		r.cancel()
		return nil, fmt.Errorf("ws: subscribe to the relay channel: %w", err)
	}
	if err := r.beat(ctx); err != nil {
		_ = r.sub.Close()
		r.cancel()
		return nil, fmt.Errorf("ws: relay heartbeat: %w", err)
	}
	r.wg.Add(4)
	go r.receive()
	go r.publish()
	go r.heartbeat()
	go r.refresher()
	return r, nil
}

func (r *redisRelay) key(ih *models.InfoHash) string {
	return r.prefix + "ws:" + hex.EncodeToString(ih[:])
}

func (r *redisRelay) channel(instance string) string { return r.prefix + "ws:inst:" + instance }

// beat records this instance's heartbeat and reads which instances are alive.
func (r *redisRelay) beat(ctx context.Context) error {
	now := time.Now()
	if err := r.rdb.ZAdd(ctx, r.instances, goredis.Z{Score: float64(now.UnixMicro()) / 1e6, Member: r.id}).Err(); err != nil {
		return err
	}
	zs, err := r.rdb.ZRangeWithScores(ctx, r.instances, 0, -1).Result()
	if err != nil {
		return err
	}
	beats := make(map[string]int64, len(zs))
	for _, z := range zs {
		if id, ok := z.Member.(string); ok {
			beats[id] = int64(z.Score * 1e9)
		}
	}
	r.beats.Store(&beats)
	// Instances silent for a day are forgotten.
	return r.rdb.ZRemRangeByScore(ctx, r.instances, "-inf", strconv.FormatInt(now.Add(-forgetAfter).Unix(), 10)).Err()
}

// heartbeat beats every beatEvery, and after each beat that went through has the refresher
// look at the instances (without waiting for it: a long refresh never makes a beat late).
func (r *redisRelay) heartbeat() {
	defer r.wg.Done()
	tick := time.NewTicker(r.beatEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(r.ctx, r.beatEvery)
			err := r.beat(ctx)
			cancel()
			if err != nil {
				if r.ctx.Err() == nil {
					glog.Errorf("ws: relay heartbeat: %v", err)
				}
				continue
			}
			select {
			case r.beaten <- struct{}{}:
			default: // the refresher is busy; it looks again after the next beat
			}
		}
	}
}

// refresher refreshes this instance's entries every swarmTTL/4, and at once when an instance
// stopped beating, then purging that one's entries from the swarms this one holds peers of.
func (r *redisRelay) refresher() {
	defer r.wg.Done()
	last := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.beaten:
		}
		dead := r.newlyDead()
		if len(dead) == 0 && time.Since(last) < r.swarmTTL/4 {
			continue
		}
		last = time.Now()
		if err := r.refresh(dead); err != nil {
			r.s.m.remoteErrors.Add(1)
			if r.ctx.Err() == nil {
				glog.Errorf("ws: relay refresh: %v", err)
			}
			continue
		}
		for _, id := range dead {
			r.purged[id] = true
		}
	}
}

// newlyDead returns the instances that stopped beating and whose entries this instance has not
// purged yet; it forgets those Redis no longer remembers.
func (r *redisRelay) newlyDead() []string {
	m := r.beats.Load()
	if m == nil {
		return nil
	}
	for id := range r.purged {
		if _, ok := (*m)[id]; !ok {
			delete(r.purged, id)
		}
	}
	var dead []string
	for id := range *m {
		if !r.purged[id] && !r.isAlive(id) {
			dead = append(dead, id)
		}
	}
	return dead
}

// refresh writes again the entries of every peer this instance holds (one lost at its join
// comes back) and sets their swarms' hashes to live swarmTTL; with dead instances, it deletes
// their entries from those hashes first.
func (r *redisRelay) refresh(dead []string) error {
	r.ihs, r.ids, r.ends = r.s.idx.held(r.ihs[:0], r.ids[:0], r.ends[:0])
	purgeArgs := make([]any, 0, len(dead))
	for _, id := range dead {
		purgeArgs = append(purgeArgs, id)
	}
	var firstErr error
	var fields []any
	for i, start := 0, 0; i < len(r.ihs); {
		ctx, cancel := context.WithTimeout(r.ctx, writeTimeout)
		pipe := r.rdb.Pipeline()
		for n := 0; n < refreshBatch && i < len(r.ihs); n, i = n+1, i+1 {
			key := r.key(&r.ihs[i])
			if len(dead) > 0 {
				purgeScript.Eval(ctx, pipe, []string{key}, purgeArgs...)
			}
			fields = fields[:0]
			for _, id := range r.ids[start:r.ends[i]] {
				fields = append(fields, string(id[:]), r.id)
			}
			start = r.ends[i]
			pipe.HSet(ctx, key, fields...)
			pipe.PExpire(ctx, key, r.swarmTTL)
		}
		if _, err := pipe.Exec(ctx); err != nil && firstErr == nil {
			firstErr = err
		}
		cancel()
	}
	clear(r.ihs)
	return firstErr
}

// isAlive reports whether instance may hold sockets: it is not known to have stopped beating.
// An instance this one has not seen beat yet started after the last look, and is alive.
func (r *redisRelay) isAlive(instance string) bool {
	if instance == r.id {
		return true
	}
	m := r.beats.Load()
	if m == nil {
		return true
	}
	last, ok := (*m)[instance]
	return !ok || time.Since(time.Unix(0, last)) < r.instanceTTL
}

// receive delivers what other instances publish for this one's sockets: the info hash and the
// peer ID it is for, then the message.
func (r *redisRelay) receive() {
	defer r.wg.Done()
	var buf []byte
	for {
		msg, err := r.sub.ReceiveMessage(r.ctx)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			glog.Errorf("ws: relay receive: %v", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		p := msg.Payload
		if len(p) < 40 {
			continue
		}
		var ih models.InfoHash
		var to models.PeerID
		copy(ih[:], p[:20])
		copy(to[:], p[20:40])
		r.s.m.remoteReceived.Add(1)
		buf = append(buf[:0], p[40:]...)
		if c := r.s.idx.lookup(&ih, &to); c == nil || !c.send(buf, nil) {
			r.s.m.remoteLost.Add(1)
		}
	}
}

// publish sends the queued publications, in pipelines of up to relayBatch.
func (r *redisRelay) publish() {
	defer r.wg.Done()
	batch := make([]publication, 0, relayBatch)
	for {
		select {
		case <-r.ctx.Done():
			return
		case p := <-r.out:
			batch = append(batch[:0], p)
		}
	fill:
		for len(batch) < relayBatch {
			select {
			case p := <-r.out:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(r.ctx, writeTimeout)
		pipe := r.rdb.Pipeline()
		for _, p := range batch {
			pipe.Publish(ctx, p.channel, p.payload)
		}
		_, err := pipe.Exec(ctx)
		if err != nil {
			r.s.m.remoteDropped.Add(uint64(len(batch)))
			if r.ctx.Err() == nil {
				glog.Errorf("ws: relay publish: %v", err)
			}
		} else {
			r.s.m.remoteSent.Add(uint64(len(batch)))
		}
		cancel()
		clear(batch)
	}
}

// enqueue queues msg for peer to of ih on instance; a full queue drops it.
func (r *redisRelay) enqueue(instance string, ih *models.InfoHash, to *models.PeerID, msg []byte) {
	payload := make([]byte, 0, 40+len(msg))
	payload = append(payload, ih[:]...)
	payload = append(payload, to[:]...)
	payload = append(payload, msg...)
	select {
	case r.out <- publication{r.channel(instance), payload}:
	default:
		r.s.m.remoteDropped.Add(1)
	}
}

func (r *redisRelay) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.ctx, r.s.reqTimeout)
}

// Join records that this instance holds peer id of ih, and gives the swarm's hash its time to
// live.
func (r *redisRelay) Join(ih *models.InfoHash, id *models.PeerID) {
	ctx, cancel := r.reqCtx()
	defer cancel()
	key := r.key(ih)
	pipe := r.rdb.Pipeline()
	pipe.HSet(ctx, key, string(id[:]), r.id)
	pipe.PExpire(ctx, key, r.swarmTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		r.s.m.remoteErrors.Add(1)
		if glog.V(2) {
			glog.Infof("ws: relay join: %v", err)
		}
	}
}

// Leave forgets peer id of ih, if this instance still holds it.
func (r *redisRelay) Leave(ih *models.InfoHash, id *models.PeerID) {
	ctx, cancel := r.reqCtx()
	defer cancel()
	if err := leaveScript.Run(ctx, r.rdb, []string{r.key(ih)}, string(id[:]), r.id).Err(); err != nil {
		r.s.m.remoteErrors.Add(1)
		if glog.V(2) {
			glog.Infof("ws: relay leave: %v", err)
		}
	}
}

// Offers sends offer i to the i-th of up to len(offers) random other peers of the swarm on any
// instance. Without Redis it falls back to this instance's peers.
func (r *redisRelay) Offers(sc *scratch, c *conn, ih *models.InfoHash, from *models.PeerID, offers []offer) {
	s := r.s
	ctx, cancel := r.reqCtx()
	defer cancel()
	key := r.key(ih)
	// One more than wanted: the sender may be among them.
	kvs, err := r.rdb.HRandFieldWithValues(ctx, key, len(offers)+1).Result()
	if err != nil {
		s.m.remoteErrors.Add(1)
		s.relayLocal(sc, ih, from, offers)
		return
	}
	var dead []string
	i := 0
	for _, kv := range kvs {
		if i == len(offers) {
			break
		}
		if kv.Key == string(from[:]) || len(kv.Key) != 20 {
			continue
		}
		if !r.isAlive(kv.Value) {
			dead = append(dead, kv.Key)
			continue
		}
		var to models.PeerID
		copy(to[:], kv.Key)
		var dst *conn
		if kv.Value == r.id {
			if dst = s.idx.lookup(ih, &to); dst == nil {
				// An entry of this instance's for a peer it no longer holds (a refresh that
				// wrote it again as the peer left): it goes, unless the peer came back.
				_ = leaveScript.Run(ctx, r.rdb, []string{key}, kv.Key, r.id).Err()
				continue
			}
		}
		o := &offers[i]
		i++
		sc.msg = appendRelay(sc.msg[:0], ih, from, "offer", o.Offer, o.OfferID)
		if dst == nil {
			r.enqueue(kv.Value, ih, &to, sc.msg)
			continue
		}
		if dst.send(sc.msg, sc) {
			s.m.offersRelayed.Add(1)
		}
	}
	if len(dead) > 0 {
		_ = r.rdb.HDel(ctx, key, dead...).Err()
	}
}

// Answer sends msg to peer to of ih held by another instance; it reports whether one holds it.
func (r *redisRelay) Answer(ih *models.InfoHash, to *models.PeerID, msg []byte) bool {
	ctx, cancel := r.reqCtx()
	defer cancel()
	inst, err := r.rdb.HGet(ctx, r.key(ih), string(to[:])).Result()
	if err != nil || inst == r.id || !r.isAlive(inst) {
		return false
	}
	r.enqueue(inst, ih, to, msg)
	s := r.s
	s.m.answersRelayed.Add(1)
	return true
}

// close stops the relay's goroutines and removes this instance from the live ones.
func (r *redisRelay) close() {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	_ = r.rdb.ZRem(ctx, r.instances, r.id).Err()
	r.cancel()
	_ = r.sub.Close()
	r.wg.Wait()
}
