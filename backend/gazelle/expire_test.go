package gazelle

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// fakeSite is Gazelle's tools.php on loopback: it records every token expiry request and
// answers failures (500) before it starts answering 200.
type fakeSite struct {
	*httptest.Server
	mu       sync.Mutex
	failures int      // requests still to fail
	requests []string // raw query of every request
	paths    []string
	accepted []string // tokens of the requests answered 200
}

func newFakeSite(t *testing.T, failures int) *fakeSite {
	t.Helper()
	s := &fakeSite{failures: failures}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests = append(s.requests, r.URL.RawQuery)
		s.paths = append(s.paths, r.URL.Path)
		if s.failures > 0 {
			s.failures--
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		}
		s.accepted = append(s.accepted, r.URL.Query().Get("tokens"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeSite) snapshot() (requests, paths, accepted []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...), append([]string(nil), s.paths...), append([]string(nil), s.accepted...)
}

// expiringConn returns a Conn with no database that sends token expiries to siteURL; its
// callback's backoff starts at 10ms. start says whether to start it now.
func expiringConn(t *testing.T, siteURL string, interval time.Duration, start bool) *Conn {
	t.Helper()
	p := DefaultParams()
	p.SiteURL, p.SitePassword = siteURL, sitePassword
	p.FlushInterval = interval
	c := offlineConnNotStarted(t, p)
	c.expire.backoffBase = 10 * time.Millisecond
	if start {
		c.start()
	}
	return c
}

func snatchOnToken(uid, tid uint64) *models.AnnounceDelta {
	return announce(uid, tid, func(d *models.AnnounceDelta) {
		d.Token, d.Snatched, d.Event, d.Left = true, true, models.Completed, 0
	})
}

func TestTokenExpiryCallback(t *testing.T) {
	site := newFakeSite(t, 2)
	c := expiringConn(t, site.URL+"/", 20*time.Millisecond, false)
	record(t, c, snatchOnToken(1, 2))
	record(t, c, snatchOnToken(3, 4))
	record(t, c, announce(5, 6, func(d *models.AnnounceDelta) { d.Token = true }))    // no snatch
	record(t, c, announce(5, 7, func(d *models.AnnounceDelta) { d.Snatched = true })) // no token
	assert.Equal(t, 2, c.expire.queued())
	c.start()

	require.Eventually(t, func() bool { _, _, ok := site.snapshot(); return len(ok) == 1 }, 10*time.Second, 5*time.Millisecond)
	requests, paths, accepted := site.snapshot()
	require.Len(t, requests, 3, "two failures, then the same request succeeds")
	want := "key=" + sitePassword + "&type=expiretoken&action=ocelot&tokens=1:2,3:4"
	for i := range requests {
		assert.Equal(t, want, requests[i], "request %d", i)
		assert.Equal(t, "/tools.php", paths[i])
	}
	assert.Equal(t, []string{"1:2,3:4"}, accepted)
	require.Eventually(t, func() bool { return c.expire.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 2.0, counterValue(t, c.metrics.callbackErrors))
	assert.Equal(t, 2.0, counterValue(t, c.metrics.flushedExpire))
}

// TestTokenExpiryBatches queues more than 350 characters of tokens: they are sent at once,
// without waiting for a tick, in requests of about 350 characters, each token exactly once.
func TestTokenExpiryBatches(t *testing.T) {
	site := newFakeSite(t, 0)
	c := expiringConn(t, site.URL+"/gazelle", time.Hour, true)
	var want []string
	for i := range 100 {
		uid, tid := uint64(100000+i), uint64(200000+i)
		record(t, c, snatchOnToken(uid, tid))
		want = append(want, strconv.FormatUint(uid, 10)+":"+strconv.FormatUint(tid, 10))
	}
	require.Eventually(t, func() bool {
		_, _, ok := site.snapshot()
		return len(strings.Join(ok, ",")) >= len(strings.Join(want, ","))-expireChars
	}, 10*time.Second, 5*time.Millisecond, "sent without a tick, each time the list passes 350 characters")
	// What is left under 350 characters waits for the next tick; Close sends it (while it
	// fails to write the rows to the database, which is down).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := c.Close(ctx)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "token expiries")
	_, paths, accepted := site.snapshot()
	assert.Equal(t, strings.Join(want, ","), strings.Join(accepted, ","), "every token once, in order")
	for i, tokens := range accepted {
		assert.LessOrEqual(t, len(tokens), expireChars+len("100000:200000,"), "request %d", i)
		assert.Equal(t, "/gazelle/tools.php", paths[i])
	}
	assert.Greater(t, len(accepted), 3)
}

func TestTokenExpirySiteDown(t *testing.T) {
	site := newFakeSite(t, 1<<30)
	c := expiringConn(t, site.URL, 20*time.Millisecond, true)
	record(t, c, snatchOnToken(1, 2))
	require.Eventually(t, func() bool { return counterValue(t, c.metrics.callbackErrors) >= 3 }, 10*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.Close(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 token expiries not sent to the site")
	assert.Contains(t, err.Error(), "500 Internal Server Error")
	assert.NotContains(t, err.Error(), sitePassword)
}

func TestTokenExpiryErrorHidesPassword(t *testing.T) {
	p := DefaultParams()
	p.SiteURL, p.SitePassword = "http://127.0.0.1:"+strconv.Itoa(freePort(t)), "Secret-Site-Password-0123456789ab"
	prefix, err := p.expireURL()
	require.NoError(t, err)
	e := newExpirer(prefix, 10, time.Second, newMetrics(queueConn(DefaultParams())))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = e.send(ctx, []tokenKey{{1, 2}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connection refused")
	assert.NotContains(t, err.Error(), "Secret")
}

func TestTokenExpiryQueueBound(t *testing.T) {
	e := newExpirer("http://127.0.0.1:1/tools.php?tokens=", 2, time.Hour, newMetrics(queueConn(DefaultParams())))
	assert.True(t, e.add(tokenKey{1, 1}))
	assert.True(t, e.add(tokenKey{1, 2}))
	assert.False(t, e.add(tokenKey{1, 3}), "past queue_limit")
	assert.Equal(t, 2, e.queued())
}

func TestExpireURL(t *testing.T) {
	tests := []struct{ site, want string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/tools.php?key=k%2By&type=expiretoken&action=ocelot&tokens="},
		{"https://site.example/gazelle/", "https://site.example/gazelle/tools.php?key=k%2By&type=expiretoken&action=ocelot&tokens="},
	}
	for _, tt := range tests {
		p := Params{SiteURL: tt.site, SitePassword: "k+y"}
		got, err := p.expireURL()
		require.NoError(t, err)
		assert.Equal(t, tt.want, got)
	}
}
