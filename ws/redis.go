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
// on the holder's channel, as is an answer to a peer another instance holds. Entries of
// instances that stopped beating are skipped and deleted when met, so a crashed instance's peers
// fade out. Publishing goes through a bounded queue: when it is full a message is dropped and
// counted, and the announcer is never held up by Redis beyond its own request.

const (
	relayQueueLen  = 4096
	relayBatch     = 64
	heartbeatEvery = 5 * time.Second
	// instanceTTL is how long an instance counts as alive after its last heartbeat.
	instanceTTL = 4 * heartbeatEvery
	// forgetAfter is how long a silent instance is remembered as dead.
	forgetAfter = 24 * time.Hour
)

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
	// beats holds the last heartbeat (unix seconds) of every instance that has beaten.
	beats atomic.Pointer[map[string]int64]
	sub   *goredis.PubSub

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

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
	r.wg.Add(3)
	go r.receive()
	go r.publish()
	go r.heartbeat()
	return r, nil
}

func (r *redisRelay) key(ih *models.InfoHash) string {
	return r.prefix + "ws:" + hex.EncodeToString(ih[:])
}

func (r *redisRelay) channel(instance string) string { return r.prefix + "ws:inst:" + instance }

// beat records this instance's heartbeat and reads which instances are alive.
func (r *redisRelay) beat(ctx context.Context) error {
	now := time.Now()
	if err := r.rdb.ZAdd(ctx, r.instances, goredis.Z{Score: float64(now.Unix()), Member: r.id}).Err(); err != nil {
		return err
	}
	zs, err := r.rdb.ZRangeWithScores(ctx, r.instances, 0, -1).Result()
	if err != nil {
		return err
	}
	beats := make(map[string]int64, len(zs))
	for _, z := range zs {
		if id, ok := z.Member.(string); ok {
			beats[id] = int64(z.Score)
		}
	}
	r.beats.Store(&beats)
	// Instances silent for a day are forgotten.
	return r.rdb.ZRemRangeByScore(ctx, r.instances, "-inf", strconv.FormatInt(now.Add(-forgetAfter).Unix(), 10)).Err()
}

func (r *redisRelay) heartbeat() {
	defer r.wg.Done()
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(r.ctx, heartbeatEvery)
			if err := r.beat(ctx); err != nil && r.ctx.Err() == nil {
				glog.Errorf("ws: relay heartbeat: %v", err)
			}
			cancel()
		}
	}
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
	return !ok || time.Since(time.Unix(last, 0)) < instanceTTL
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

// Join records that this instance holds peer id of ih.
func (r *redisRelay) Join(ih *models.InfoHash, id *models.PeerID) {
	ctx, cancel := r.reqCtx()
	defer cancel()
	if err := r.rdb.HSet(ctx, r.key(ih), string(id[:]), r.id).Err(); err != nil {
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
		o := &offers[i]
		i++
		sc.msg = appendRelay(sc.msg[:0], ih, from, "offer", o.Offer, o.OfferID)
		if kv.Value != r.id {
			r.enqueue(kv.Value, ih, &to, sc.msg)
			continue
		}
		if dst := s.idx.lookup(ih, &to); dst != nil && dst.send(sc.msg, sc) {
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
