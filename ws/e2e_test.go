package ws_test

// End-to-end tests: the real tracker started with chihaya.Start on loopback, its WebSocket
// tracker driven by a Go WebSocket client speaking the WebTorrent protocol (protocol.md §2.9).
// They live in package ws_test because package chihaya imports package ws.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
)

// startTracker runs a whole tracker on 127.0.0.1 and stops it when the test ends.
func startTracker(t *testing.T, mod func(*config.Config)) *chihaya.Chihaya {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.StatsEnabled = true
	if mod != nil {
		mod(&cfg)
	}
	require.NoError(t, cfg.Validate())
	c, err := chihaya.Start(&cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	return c
}

// client is one WebSocket to the tracker.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, c *chihaya.Chihaya, path string) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+c.Addr().String()+path, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	t.Cleanup(func() { _ = ws.Close() })
	return &client{t: t, ws: ws}
}

// bin makes a 20-character binary string: each byte one code point U+0000–U+00FF.
func bin(prefix string, n byte) string {
	var r [20]rune
	for i := range r {
		r[i] = rune(0x80 + i) // high code points, sent as two UTF-8 bytes each
	}
	for i, c := range []byte(prefix) {
		r[i] = rune(c)
	}
	r[19] = rune(n)
	return string(r[:])
}

func (cl *client) send(v any) {
	cl.t.Helper()
	require.NoError(cl.t, cl.ws.WriteJSON(v))
}

func (cl *client) sendRaw(b []byte) {
	cl.t.Helper()
	require.NoError(cl.t, cl.ws.WriteMessage(websocket.TextMessage, b))
}

// read returns the next message, failing the test after 5 seconds.
func (cl *client) read() map[string]any {
	cl.t.Helper()
	require.NoError(cl.t, cl.ws.SetReadDeadline(time.Now().Add(5*time.Second)))
	typ, b, err := cl.ws.ReadMessage()
	require.NoError(cl.t, err)
	require.Equal(cl.t, websocket.TextMessage, typ)
	var m map[string]any
	require.NoError(cl.t, json.Unmarshal(b, &m), "%s", b)
	return m
}

// barrier scrapes ih and checks that the next message is the scrape's answer: whatever the
// tracker queued to this socket before it answered would have come first. It returns the
// torrent's counts.
func (cl *client) barrier(ih string) map[string]any {
	cl.t.Helper()
	cl.send(map[string]any{"action": "scrape", "info_hash": ih})
	m := cl.read()
	require.Equal(cl.t, "scrape", m["action"], "a message came before the barrier: %v", m)
	files := m["files"].(map[string]any)
	return files[ih].(map[string]any)
}

func announce(ih, id, event string, left any) map[string]any {
	m := map[string]any{"action": "announce", "info_hash": ih, "peer_id": id,
		"uploaded": 0, "downloaded": 0, "left": left, "numwant": 5}
	if event != "" {
		m["event"] = event
	}
	return m
}

func offers(n int, tag string) []map[string]any {
	o := make([]map[string]any, n)
	for i := range o {
		o[i] = map[string]any{"offer": map[string]any{"type": "offer", "sdp": fmt.Sprintf("v=0 %s %d", tag, i)},
			"offer_id": bin("o"+tag[:min(len(tag), 10)], byte(i))}
	}
	return o
}

func TestAnnounceReply(t *testing.T) {
	c := startTracker(t, nil)
	for _, path := range []string{"/announce", "/"} {
		t.Run(path, func(t *testing.T) {
			ih := bin("reply"+path[:min(len(path), 10)], 1)
			cl := dial(t, c, path)
			cl.send(announce(ih, bin("peer", 1), "started", 100))
			m := cl.read()
			assert.Equal(t, map[string]any{"action": "announce", "info_hash": ih, "interval": float64(360),
				"complete": float64(0), "incomplete": float64(1)}, m)
		})
	}
}

func TestOffersRelayedToDistinctOthers(t *testing.T) {
	c := startTracker(t, nil)
	ih := bin("offers", 1)
	const others = 4
	var peers []*client
	for i := range others {
		cl := dial(t, c, "/announce")
		cl.send(announce(ih, bin("other", byte(i)), "started", 10))
		require.Equal(t, float64(i+1), cl.read()["incomplete"])
		peers = append(peers, cl)
	}
	tests := []struct {
		name   string
		offers int
		want   int
	}{
		{"fewer offers than peers", 3, 3},
		{"more offers than peers", 10, others},
		{"no offers", 0, 0},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender := dial(t, c, "/announce")
			from := bin("sender", byte(n))
			msg := announce(ih, from, "started", 10)
			msg["offers"] = offers(tt.offers, tt.name)
			sender.send(msg)
			reply := sender.read()
			require.Equal(t, "announce", reply["action"])
			require.NotContains(t, reply, "offer")
			// The sender's next message is handled after its announce: every offer is queued
			// by the time its barrier answers, and none came back to the sender.
			sender.barrier(ih)
			ids := map[string]bool{}
			for _, p := range peers {
				// Each peer got at most one offer, before its barrier.
				p.send(map[string]any{"action": "scrape", "info_hash": ih})
				m := p.read()
				if m["action"] == "scrape" {
					continue
				}
				assert.Equal(t, from, m["peer_id"])
				assert.Equal(t, ih, m["info_hash"])
				require.Contains(t, m, "offer")
				id := m["offer_id"].(string)
				assert.False(t, ids[id], "offer %q sent twice", id)
				ids[id] = true
				require.Equal(t, "scrape", p.read()["action"])
			}
			assert.Len(t, ids, tt.want)
			// The sender leaves for the next case.
			sender.send(announce(ih, from, "stopped", 10))
			require.Equal(t, "announce", sender.read()["action"])
		})
	}
}

func TestAnswerRelayed(t *testing.T) {
	c := startTracker(t, nil)
	ih := bin("answer", 1)
	a, b := dial(t, c, "/announce"), dial(t, c, "/announce")
	idA, idB := bin("A", 1), bin("B", 2)
	b.send(announce(ih, idB, "started", 0))
	b.read()
	msg := announce(ih, idA, "started", 10)
	msg["offers"] = offers(1, "x")
	a.send(msg)
	a.read()
	off := b.read()
	require.Equal(t, idA, off["peer_id"])
	answer := map[string]any{"type": "answer", "sdp": "v=0 answer é"}
	b.send(map[string]any{"action": "announce", "info_hash": ih, "peer_id": idB, "to_peer_id": idA,
		"answer": answer, "offer_id": off["offer_id"]})
	got := a.read()
	assert.Equal(t, map[string]any{"action": "announce", "info_hash": ih, "peer_id": idB,
		"answer": answer, "offer_id": off["offer_id"]}, got)
	// The answerer gets no reply, and stays a seeder: an answer carries no left.
	counts := b.barrier(ih)
	assert.Equal(t, float64(1), counts["complete"])
	assert.Equal(t, float64(1), counts["incomplete"])
}

func TestScrape(t *testing.T) {
	c := startTracker(t, nil)
	ih1, ih2 := bin("scrape", 1), bin("scrape", 2)
	cl := dial(t, c, "/announce")
	cl.send(announce(ih1, bin("p", 1), "started", 0))
	cl.read()
	cl.send(announce(ih2, bin("p", 1), "started", 5))
	cl.read()
	tests := []struct {
		name string
		ih   any
		want map[string]any
	}{
		{"one string", ih1, map[string]any{ih1: map[string]any{"complete": float64(1), "incomplete": float64(0), "downloaded": float64(0)}}},
		{"a list", []string{ih1, ih2}, map[string]any{
			ih1: map[string]any{"complete": float64(1), "incomplete": float64(0), "downloaded": float64(0)},
			ih2: map[string]any{"complete": float64(0), "incomplete": float64(1), "downloaded": float64(0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl.send(map[string]any{"action": "scrape", "info_hash": tt.ih})
			m := cl.read()
			assert.Equal(t, tt.want, m["files"])
			assert.Equal(t, map[string]any{"min_request_interval": float64(1800)}, m["flags"])
		})
	}
	t.Run("absent", func(t *testing.T) {
		cl.send(map[string]any{"action": "scrape"})
		m := cl.read()
		assert.Equal(t, "scrape", m["action"])
		assert.Contains(t, m, "failure reason")
	})
}

func TestEvents(t *testing.T) {
	c := startTracker(t, nil)
	ih := bin("events", 1)
	cl := dial(t, c, "/announce")
	id := bin("ev", 1)
	steps := []struct {
		event                          string
		left                           any
		complete, incomplete, download float64
	}{
		// WebTorrent's seeder says completed before started: one download, once.
		{"completed", 0, 1, 0, 1},
		{"started", 0, 1, 0, 1},
		{"completed", 0, 1, 0, 1},
		{"update", 0, 1, 0, 1},
		{"", 0, 1, 0, 1},
		{"paused", 0, 1, 0, 1},
		{"stopped", 0, 0, 0, 1},
		// left null: a leecher (a client without the metadata yet).
		{"started", nil, 0, 1, 1},
		{"stopped", nil, 0, 0, 1},
	}
	for i, st := range steps {
		cl.send(announce(ih, id, st.event, st.left))
		m := cl.read()
		require.Equal(t, "announce", m["action"], "step %d: %v", i, m)
		assert.Equal(t, st.complete, m["complete"], "step %d", i)
		assert.Equal(t, st.incomplete, m["incomplete"], "step %d", i)
		counts := cl.barrier(ih)
		assert.Equal(t, st.download, counts["downloaded"], "step %d", i)
	}
	cl.send(announce(ih, id, "bogus", 0))
	m := cl.read()
	assert.Equal(t, "invalid event", m["failure reason"])
	assert.Equal(t, ih, m["info_hash"])
}

func TestCloseRemovesPeer(t *testing.T) {
	c := startTracker(t, nil)
	ih1, ih2 := bin("close", 1), bin("close", 2)
	gone := dial(t, c, "/announce")
	for _, ih := range []string{ih1, ih2} {
		gone.send(announce(ih, bin("gone", 1), "started", 10))
		gone.read()
	}
	watcher := dial(t, c, "/announce")
	for _, ih := range []string{ih1, ih2} {
		require.Equal(t, float64(1), watcher.barrier(ih)["incomplete"])
	}
	require.NoError(t, gone.ws.Close())
	deadline := time.Now().Add(5 * time.Second)
	for _, ih := range []string{ih1, ih2} {
		for watcher.barrier(ih)["incomplete"] != float64(0) {
			require.True(t, time.Now().Before(deadline), "the closed socket's peer is still in %q", ih)
		}
	}
	// An offer finds no one to go to.
	sender := dial(t, c, "/announce")
	msg := announce(ih1, bin("s", 1), "started", 10)
	msg["offers"] = offers(2, "c")
	sender.send(msg)
	assert.Equal(t, float64(1), sender.read()["incomplete"])
	sender.barrier(ih1)
}

func TestBadMessages(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) { cfg.WSMaxMessageBytes = 4096 })
	ih := bin("bad", 1)
	bystander := dial(t, c, "/announce")
	bystander.send(announce(ih, bin("by", 1), "started", 10))
	bystander.read()

	long := strings.Repeat("x", 21)
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"not JSON", `{"action":`, "invalid JSON message"},
		{"not UTF-8", "{\"action\":\"announce\",\"x\":\"\xff\"}", "message is not valid UTF-8"},
		{"unknown action", `{"action":"connect"}`, "invalid action"},
		{"rune above 0xFF", `{"action":"announce","info_hash":"` + strings.Repeat("Ā", 20) + `","peer_id":"` + strings.Repeat("a", 20) + `"}`, "invalid info_hash"},
		{"short info_hash", `{"action":"announce","info_hash":"abc","peer_id":"` + strings.Repeat("a", 20) + `"}`, "invalid info_hash"},
		{"long peer_id", `{"action":"announce","info_hash":"` + strings.Repeat("a", 20) + `","peer_id":"` + long + `"}`, "invalid peer_id"},
		{"answer without to_peer_id", `{"action":"announce","info_hash":"` + strings.Repeat("a", 20) + `","peer_id":"` + strings.Repeat("a", 20) + `","answer":{}}`, "invalid `to_peer_id` (required with `answer`)"},
		{"info_hash a number", `{"action":"scrape","info_hash":5}`, "invalid info_hash"},
		{"offers not a list", `{"action":"announce","info_hash":"` + strings.Repeat("a", 20) + `","peer_id":"` + strings.Repeat("a", 20) + `","offers":"x"}`, "invalid JSON message"},
	}
	cl := dial(t, c, "/announce")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl.sendRaw([]byte(tt.raw))
			assert.Equal(t, tt.want, cl.read()["failure reason"])
		})
	}
	t.Run("too large", func(t *testing.T) {
		big := dial(t, c, "/announce")
		big.sendRaw([]byte(`{"action":"scrape","x":"` + strings.Repeat("y", 5000) + `"}`))
		require.NoError(t, big.ws.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, _, err := big.ws.ReadMessage()
		require.Error(t, err)
		var ce *websocket.CloseError
		if assert.ErrorAs(t, err, &ce) {
			assert.Equal(t, websocket.CloseMessageTooBig, ce.Code)
		}
	})
	// Nothing of that touched the others.
	assert.Equal(t, float64(1), bystander.barrier(ih)["incomplete"])
	cl.send(announce(ih, bin("cl", 1), "started", 10))
	assert.Equal(t, float64(2), cl.read()["incomplete"])
}

func TestWhitelist(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) {
		cfg.ClientWhitelistEnabled = true
		cfg.ClientWhitelist = []string{"-WW"}
	})
	ih := bin("wl", 1)
	cl := dial(t, c, "/announce")
	cl.send(announce(ih, bin("-XX0001-", 1), "started", 10))
	m := cl.read()
	assert.Equal(t, "Your client is not on the whitelist", m["failure reason"])
	assert.Equal(t, "announce", m["action"])
	cl.send(announce(ih, bin("-WW0001-", 1), "started", 10))
	assert.Equal(t, float64(1), cl.read()["incomplete"])
}

func TestOutlivesHTTPTimeouts(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) {
		cfg.HTTPWriteTimeout = config.Duration{Duration: time.Second}
		cfg.HTTPIdleTimeout = config.Duration{Duration: time.Second}
		cfg.WSIdleTimeout = config.Duration{Duration: 2 * time.Minute}
	})
	ih := bin("long", 1)
	cl := dial(t, c, "/announce")
	start := time.Now()
	for i := 0; time.Since(start) < 2500*time.Millisecond; i++ {
		// Quiet spells longer than both HTTP timeouts, between messages.
		time.Sleep(1200 * time.Millisecond)
		cl.send(announce(ih, bin("l", 1), "", 10))
		require.Equal(t, float64(1), cl.read()["incomplete"], "message %d", i)
	}
}

func TestIdleTimeout(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) {
		cfg.WSIdleTimeout = config.Duration{Duration: time.Second}
		cfg.WSPingInterval = config.Duration{}
	})
	cl := dial(t, c, "/announce")
	start := time.Now()
	require.NoError(t, cl.ws.SetReadDeadline(start.Add(10*time.Second)))
	// The tracker closes the quiet socket: the read ends long before the client's deadline.
	_, _, err := cl.ws.ReadMessage()
	require.Error(t, err)
	assert.Less(t, time.Since(start), 9*time.Second, "closed by the client's own deadline: %v", err)
	assert.Equal(t, 1.0, metric(t, c, "chihaya_ws_idle_closed_total"))
}

// metric reads one unlabelled metric of the tracker's registry.
func metric(t *testing.T, c *chihaya.Chihaya, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := c.Stats().Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					ok = ok || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !ok {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

// TestRequestsCounted: announces (answers included) and scrapes are requests of transport ws in
// chihaya_requests_total and /stats, failures included; a message that is not JSON is not one.
func TestRequestsCounted(t *testing.T) {
	c := startTracker(t, nil)
	ih := bin("counted", 1)
	a, b := dial(t, c, "/announce"), dial(t, c, "/announce")
	a.send(announce(ih, bin("a", 1), "started", 10))
	a.read()
	msg := announce(ih, bin("b", 1), "started", 10)
	msg["offers"] = offers(1, "counted")
	b.send(msg)
	b.read()
	offer := a.read()
	a.send(map[string]any{"action": "announce", "info_hash": ih, "peer_id": bin("a", 1), "to_peer_id": bin("b", 1),
		"answer": map[string]any{"type": "answer", "sdp": "x"}, "offer_id": offer["offer_id"]})
	b.read()
	a.send(map[string]any{"action": "announce", "info_hash": "short", "peer_id": bin("a", 1)})
	a.read()
	a.sendRaw([]byte(`{"action":`))
	a.read()
	a.barrier(ih)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Stats().Sync(ctx)
	assert.Equal(t, 4.0, metric(t, c, "chihaya_requests_total", "transport", "ws", "action", "announce"))
	assert.Equal(t, 1.0, metric(t, c, "chihaya_requests_total", "transport", "ws", "action", "scrape"))
	assert.Equal(t, 1.0, metric(t, c, "chihaya_failures_total", "action", "announce"))
	doc, err := c.Stats().Snapshot(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), doc["requests_by_transport"].(map[string]any)["ws"])
	assert.Equal(t, uint64(0), doc["requests_by_transport"].(map[string]any)["http"])
	assert.Equal(t, uint64(4), doc["announces"].(map[string]any)["total"])
}

// TestFullScrape: with full_scrape_enabled, a scrape without info_hash is answered with every
// torrent, as the reference answers it, from an answer built at most once per
// full_scrape_interval; a scrape with an empty list is still refused.
func TestFullScrape(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) {
		cfg.FullScrapeEnabled = true
		cfg.FullScrapeInterval = config.Duration{Duration: time.Hour}
	})
	ih1, ih2, ih3 := bin("full", 1), bin("full", 2), bin("full", 3)
	cl := dial(t, c, "/announce")
	cl.send(announce(ih1, bin("p", 1), "started", 0))
	cl.read()
	cl.send(announce(ih2, bin("p", 1), "started", 5))
	cl.read()
	want := map[string]any{
		ih1: map[string]any{"complete": float64(1), "incomplete": float64(0), "downloaded": float64(0)},
		ih2: map[string]any{"complete": float64(0), "incomplete": float64(1), "downloaded": float64(0)},
	}
	for _, scrape := range []map[string]any{{"action": "scrape"}, {"action": "scrape", "info_hash": nil}} {
		cl.send(scrape)
		m := cl.read()
		assert.Equal(t, "scrape", m["action"])
		assert.Equal(t, want, m["files"], "%v", scrape)
		assert.Equal(t, map[string]any{"min_request_interval": float64(1800)}, m["flags"])
	}

	// A torrent announced since is not in the answer kept for the interval.
	cl.send(announce(ih3, bin("p", 1), "started", 5))
	cl.read()
	cl.send(map[string]any{"action": "scrape"})
	assert.Equal(t, want, cl.read()["files"], "the kept answer")

	cl.send(map[string]any{"action": "scrape", "info_hash": []string{}})
	assert.Contains(t, cl.read(), "failure reason")
}
