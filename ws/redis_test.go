package ws_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	_ "github.com/chihaya/chihaya/tracker/redis"
)

// redisAddr returns CHIHAYA_REDIS_ADDR, skipping the test without it unless
// CHIHAYA_REQUIRE_REDIS=1 makes that a failure.
func redisAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("CHIHAYA_REDIS_ADDR")
	if addr == "" {
		msg := "CHIHAYA_REDIS_ADDR not set: run `bash .ci/run`, or `eval \"$(bash .ci/redis.sh)\"`"
		if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + " (CHIHAYA_REQUIRE_REDIS=1, so this is a failure)")
		}
		t.Skip(msg)
	}
	return addr
}

// redisParams returns the redis driver's params for a Redis of the test's own: a key prefix of
// its own, whose keys the test's end deletes.
func redisParams(t *testing.T) json.RawMessage {
	t.Helper()
	addr := redisAddr(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "chihaya-ws-test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		rdb := goredis.NewClient(&goredis.Options{Addr: addr})
		defer rdb.Close()
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			_ = rdb.Del(ctx, keys...).Err()
		}
	})
	params, err := json.Marshal(map[string]any{"addr": addr, "key_prefix": prefix})
	require.NoError(t, err)
	return params
}

// TestTwoInstancesThroughRedis: two trackers on one Redis share a swarm; a peer on A receives
// the offers of a peer on B, its answer gets back to B, and counts agree on both.
func TestTwoInstancesThroughRedis(t *testing.T) {
	params := redisParams(t)
	mod := func(cfg *config.Config) { cfg.Tracker = config.DriverConfig{Name: "redis", Params: params} }
	trA, trB := startTracker(t, mod), startTracker(t, mod)
	ih := bin("redis", 1)
	onA, onB := dial(t, trA, "/announce"), dial(t, trB, "/announce")
	idA, idB := bin("onA", 1), bin("onB", 2)
	onA.send(announce(ih, idA, "started", 0))
	assert.Equal(t, float64(1), onA.read()["complete"])

	msg := announce(ih, idB, "started", 10)
	msg["offers"] = offers(3, "r")
	onB.send(msg)
	reply := onB.read()
	assert.Equal(t, float64(1), reply["complete"], "B counts A's peer")
	assert.Equal(t, float64(1), reply["incomplete"])

	off := onA.read()
	require.Equal(t, idB, off["peer_id"], "%v", off)
	require.Contains(t, off, "offer")
	onA.barrier(ih) // one offer only: the swarm has one other peer

	answer := map[string]any{"type": "answer", "sdp": "v=0 from A"}
	onA.send(map[string]any{"action": "announce", "info_hash": ih, "peer_id": idA, "to_peer_id": idB,
		"answer": answer, "offer_id": off["offer_id"]})
	got := onB.read()
	assert.Equal(t, map[string]any{"action": "announce", "info_hash": ih, "peer_id": idA,
		"answer": answer, "offer_id": off["offer_id"]}, got)

	// A's socket closes: B's next offers find no one, and the counts drop on both.
	require.NoError(t, onA.ws.Close())
	deadline := time.Now().Add(5 * time.Second)
	for onB.barrier(ih)["complete"] != float64(0) {
		require.True(t, time.Now().Before(deadline), "A's peer is still counted")
	}
	msg["event"] = ""
	onB.send(msg)
	assert.Equal(t, "announce", onB.read()["action"])
	onB.barrier(ih)
	// The publisher counts after Redis acknowledged, which may be after the delivery.
	for metric(t, trB, "chihaya_ws_relay_published_total") != 1 || metric(t, trA, "chihaya_ws_relay_published_total") != 1 {
		require.True(t, time.Now().Before(deadline), "published: the offer on B, the answer on A")
		time.Sleep(10 * time.Millisecond)
	}
	assert.Equal(t, 1.0, metric(t, trA, "chihaya_ws_relay_received_total"), "the offer")
	assert.Equal(t, 1.0, metric(t, trB, "chihaya_ws_relay_received_total"), "the answer")
	assert.Equal(t, 0.0, metric(t, trB, "chihaya_ws_relay_dropped_total"))
}

// redisKeys returns a client of the test's Redis and the relay hash of info hash ih (a binary
// string as the tests send it) under params' key prefix.
func redisKeys(t *testing.T, params json.RawMessage, ih string) (*goredis.Client, string) {
	t.Helper()
	var p struct {
		Addr      string `json:"addr"`
		KeyPrefix string `json:"key_prefix"`
	}
	require.NoError(t, json.Unmarshal(params, &p))
	rdb := goredis.NewClient(&goredis.Options{Addr: p.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, p.KeyPrefix + "ws:" + hex.EncodeToString([]byte(latin1(ih)))
}

// TestRedisNewPeerIDReplacesOld: a socket that announces a torrent again under another peer ID
// leaves the relay's hash under its old one.
func TestRedisNewPeerIDReplacesOld(t *testing.T) {
	params := redisParams(t)
	tr := startTracker(t, func(cfg *config.Config) { cfg.Tracker = config.DriverConfig{Name: "redis", Params: params} })
	ih := bin("newid", 1)
	rdb, key := redisKeys(t, params, ih)
	ctx := context.Background()
	cl := dial(t, tr, "/announce")
	oldID, newID := bin("old", 1), bin("new", 2)
	cl.send(announce(ih, oldID, "started", 10))
	require.Equal(t, "announce", cl.read()["action"])
	fields, err := rdb.HKeys(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{latin1(oldID)}, fields)

	cl.send(announce(ih, newID, "", 10))
	require.Equal(t, "announce", cl.read()["action"])
	fields, err = rdb.HKeys(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{latin1(newID)}, fields, "the old peer ID is gone")

	// The socket closes: its peer leaves the hash.
	require.NoError(t, cl.ws.Close())
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := rdb.HLen(ctx, key).Result()
		require.NoError(t, err)
		if n == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the closed socket's peer is still in the hash")
		time.Sleep(10 * time.Millisecond)
	}
}
