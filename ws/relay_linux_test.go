package ws

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// relayRedis returns a client of CHIHAYA_REDIS_ADDR and a key prefix of the test's own, whose
// keys the test's end deletes; without the address the test is skipped, unless
// CHIHAYA_REQUIRE_REDIS=1 makes that a failure.
func relayRedis(t *testing.T) (*goredis.Client, string) {
	t.Helper()
	addr := os.Getenv("CHIHAYA_REDIS_ADDR")
	if addr == "" {
		msg := "CHIHAYA_REDIS_ADDR not set: run `bash .ci/run`, or `eval \"$(bash .ci/redis.sh)\"`"
		if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + " (CHIHAYA_REQUIRE_REDIS=1, so this is a failure)")
		}
		t.Skip(msg)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "chihaya-ws-relay-test:" + hex.EncodeToString(b[:]) + ":"
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := rdb.Keys(ctx, prefix+"*").Result(); len(keys) > 0 {
			_ = rdb.Del(ctx, keys...).Err()
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// relayServer is a server on a tracker with the memory driver that relays through rdb under
// prefix, with the relay's timing shortened to t.
func relayServer(tb testing.TB, rdb *goredis.Client, prefix string, t relayTiming) *Server {
	tb.Helper()
	cfg := config.Default()
	require.NoError(tb, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(tb, err)
	s, err := New(&cfg, tkr, WithRedis(rdb, prefix), func(s *Server) { s.relayTiming = &t })
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// announceOn has c announce peer id (20 ASCII characters) in swarm ih, without offers.
func announceOn(t *testing.T, s *Server, c *conn, ih, id string) {
	t.Helper()
	msg := fmt.Sprintf(`{"action":"announce","info_hash":%q,"peer_id":%q,"uploaded":0,"downloaded":0,"left":1,"event":"started"}`, ih, id)
	sc := s.getScratch()
	s.handle(c, []byte(msg), sc)
	sc.flushAll()
	sc.release()
	require.Zero(t, s.m.failures.Load())
}

// TestRedisCrashedInstanceExpires: the entries of an instance that stops beating without
// closing (a crash) go: the hash of a swarm only it held expires, and the instances alive delete
// its entries from the swarms they hold peers of too, whose hashes they keep refreshed.
func TestRedisCrashedInstanceExpires(t *testing.T) {
	rdb, prefix := relayRedis(t)
	timing := relayTiming{beat: 100 * time.Millisecond, instanceTTL: time.Second, swarmTTL: 2 * time.Second}
	a := relayServer(t, rdb, prefix, timing)
	b := relayServer(t, rdb, prefix, timing)
	const shared, onlyB = "shared-swarm-0000001", "b-only-swarm-0000002"
	key := func(ih string) string {
		var x models.InfoHash
		copy(x[:], ih)
		return a.rr.key(&x)
	}
	ctx := context.Background()
	for i, p := range []struct {
		s      *Server
		ih, id string
	}{{a, shared, "peer-on-a-0000000001"}, {b, shared, "peer-on-b-0000000002"}, {b, onlyB, "peer-on-b-0000000003"}} {
		c, client := pairConn(t, p.s, i)
		t.Cleanup(func() { _ = syscall.Close(client) })
		announceOn(t, p.s, c, p.ih, p.id)
	}
	got, err := rdb.HGetAll(ctx, key(shared)).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"peer-on-a-0000000001": a.rr.id, "peer-on-b-0000000002": b.rr.id}, got)
	ttl, err := rdb.PTTL(ctx, key(onlyB)).Result()
	require.NoError(t, err)
	assert.True(t, ttl > 0 && ttl <= timing.swarmTTL, "a joined swarm's hash lives swarmTTL: %v", ttl)

	// B crashes: its relay stops beating and refreshing, and leaves nothing.
	b.rr.cancel()
	_ = b.rr.sub.Close()
	b.rr.wg.Wait()
	crashed := time.Now()

	deadline := crashed.Add(10 * time.Second)
	for {
		n, err := rdb.Exists(ctx, key(onlyB)).Result()
		require.NoError(t, err)
		got, err := rdb.HGetAll(ctx, key(shared)).Result()
		require.NoError(t, err)
		if n == 0 && len(got) == 1 {
			assert.Equal(t, map[string]string{"peer-on-a-0000000001": a.rr.id}, got, "A's peer stays")
			break
		}
		require.True(t, time.Now().Before(deadline), "B's entries are still there: %d swarm, %v", n, got)
		time.Sleep(20 * time.Millisecond)
	}
	// A keeps refreshing the shared hash: its time to live goes up again.
	first, err := rdb.PTTL(ctx, key(shared)).Result()
	require.NoError(t, err)
	for {
		ttl, err := rdb.PTTL(ctx, key(shared)).Result()
		require.NoError(t, err)
		if ttl > first {
			break
		}
		require.True(t, time.Now().Before(deadline), "A does not refresh the swarms it holds peers of (%v)", ttl)
		time.Sleep(20 * time.Millisecond)
	}
	got, err = rdb.HGetAll(ctx, key(shared)).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"peer-on-a-0000000001": a.rr.id}, got)
}
