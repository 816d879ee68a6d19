//go:build linux

package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRedisTwoTrackersWebSocket runs two tracker processes on one Redis and a WebTorrent peer
// on each: the offer of the peer on B reaches the peer on A, and A's answer gets back to B,
// through the WebSocket trackers' relay over Redis. Redis comes from CHIHAYA_REDIS_ADDR, as for
// TestRedisTwoTrackers.
func TestRedisTwoTrackersWebSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	addr := os.Getenv("CHIHAYA_REDIS_ADDR")
	if addr == "" {
		msg := "CHIHAYA_REDIS_ADDR not set: run `bash .ci/run`, or `eval \"$(bash .ci/redis.sh)\"`"
		if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
			t.Fatal("CHIHAYA_REQUIRE_REDIS=1 but " + msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := boundedContext(t, redisE2ETimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	params := map[string]any{"addr": addr, "key_prefix": "chihaya-e2e-ws:" + randomHex(8) + ":"}
	t.Cleanup(func() { assert.NoError(t, deleteRedisPrefix(params)) })
	s := &swarm{t: t, root: t.TempDir()}
	a := startRedisTracker(ctx, s, bin, "tracker-a", params)
	b := startRedisTracker(ctx, s, bin, "tracker-b", params)

	dial := func(tr *redisTracker) *websocket.Conn {
		conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+strings.TrimPrefix(tr.http, "http://")+"/announce", nil)
		require.NoError(t, err, "dial %s", tr.name)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	read := func(conn *websocket.Conn) map[string]any {
		t.Helper()
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, msg, err := conn.ReadMessage()
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(msg, &m), "%s", msg)
		return m
	}
	// Binary strings: bytes 0x80 and up travel as two-byte UTF-8 characters.
	ih := "ws-e2e-\u00e9\u00e8\u00ff-redis-xyz"
	idA, idB := "-WW0001-\u00a0\u00a1-peer-on-a", "-WW0001-\u00a0\u00a1-peer-on-b"
	require.Equal(t, 20, len([]rune(ih)))
	require.Equal(t, 20, len([]rune(idA)))
	onA, onB := dial(a), dial(b)
	require.NoError(t, onA.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": idA,
		"event": "started", "left": 0, "uploaded": 0, "downloaded": 0}))
	assert.Equal(t, float64(1), read(onA)["complete"])

	require.NoError(t, onB.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": idB,
		"event": "started", "left": 100, "uploaded": 0, "downloaded": 0, "numwant": 2,
		"offers": []map[string]any{
			{"offer": map[string]any{"type": "offer", "sdp": "v=0 offer 1"}, "offer_id": "offer-id-000000000001"},
			{"offer": map[string]any{"type": "offer", "sdp": "v=0 offer 2"}, "offer_id": "offer-id-000000000002"},
		}}))
	reply := read(onB)
	assert.Equal(t, []any{float64(1), float64(1)}, []any{reply["complete"], reply["incomplete"]}, "B counts the peer on A: %v", reply)

	off := read(onA)
	require.Equal(t, idB, off["peer_id"], "%v", off)
	require.Equal(t, ih, off["info_hash"])
	require.Contains(t, off, "offer")
	answer := map[string]any{"type": "answer", "sdp": "v=0 answer from A"}
	require.NoError(t, onA.WriteJSON(map[string]any{"action": "announce", "info_hash": ih, "peer_id": idA,
		"to_peer_id": idB, "answer": answer, "offer_id": off["offer_id"]}))
	got := read(onB)
	assert.Equal(t, map[string]any{"action": "announce", "info_hash": ih, "peer_id": idA, "answer": answer,
		"offer_id": off["offer_id"]}, got)

	for _, tr := range []*redisTracker{a, b} {
		tr.proc.stop()
		if err := tr.proc.err; err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", tr.name, err)
		}
		if log, err := os.ReadFile(tr.proc.log); err != nil {
			t.Error(err)
		} else if m := trackerTrouble.Find(log); m != nil {
			t.Errorf("%s logged trouble: %q", tr.name, m)
		}
	}
}
