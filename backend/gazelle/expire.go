package gazelle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/golang/glog"
)

// expireChars is the length of a token list past which Ocelot sends the callback at once
// instead of waiting for the next tick, and the length a request's list is cut at.
const expireChars = 350

// expireTimeout bounds one callback request.
const expireTimeout = 10 * time.Second

// expirer tells the site which freeleech tokens were used up (protocol.md §3.9): it queues
// "uid:tid" entries, and every tick (or as soon as the list passes 350 characters) it sends
// GET <prefix><uid>:<tid>,<uid>:<tid>… and retries a request until the site answers 200, with
// backoff from 1s doubling to a minute. Entries queue past limit are refused.
type expirer struct {
	prefix   string
	client   *http.Client
	limit    int
	interval time.Duration
	metrics  *metrics
	// backoffBase is the first retry's wait (1s; tests shorten it).
	backoffBase time.Duration

	mu      sync.Mutex
	pending []tokenKey
	chars   int // length of pending as text, separators included
	// inflight is the request being sent or retried; only the loop (or drain after it)
	// touches it, but its length is read under mu for the metrics.
	inflight []tokenKey

	kick chan struct{}
	quit chan struct{}
	done chan struct{}
}

func newExpirer(prefix string, limit int, interval time.Duration, m *metrics) *expirer {
	return &expirer{
		prefix:      prefix,
		client:      &http.Client{Timeout: expireTimeout},
		limit:       limit,
		interval:    interval,
		metrics:     m,
		backoffBase: time.Second,
		kick:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
	}
}

// add queues a token expiry; false when the queue is full.
func (e *expirer) add(k tokenKey) bool {
	e.mu.Lock()
	if len(e.pending)+len(e.inflight) >= e.limit {
		e.mu.Unlock()
		return false
	}
	e.pending = append(e.pending, k)
	e.chars += entryLen(k) + 1
	long := e.chars > expireChars
	e.mu.Unlock()
	if long {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// queued returns the expiries not yet acknowledged by the site.
func (e *expirer) queued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pending) + len(e.inflight)
}

func entryLen(k tokenKey) int {
	var b [41]byte
	return len(strconv.AppendUint(strconv.AppendUint(b[:0], k.uid, 10), k.tid, 10)) + 1
}

// take moves the next request's entries, up to expireChars characters of list (at least one
// entry), from pending to inflight. e.mu is held.
func (e *expirer) take() {
	n, chars := 0, 0
	for n < len(e.pending) && (n == 0 || chars < expireChars) {
		chars += entryLen(e.pending[n]) + 1
		n++
	}
	e.inflight = append(e.inflight[:0], e.pending[:n]...)
	e.pending = append(e.pending[:0], e.pending[n:]...)
	e.chars -= chars
}

func (e *expirer) start(ctx context.Context) {
	go e.run(ctx)
}

func (e *expirer) run(ctx context.Context) {
	defer close(e.done)
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	for {
		select {
		case <-e.quit:
			return
		case <-tick.C:
		case <-e.kick:
		}
		_ = e.sendAll(ctx, e.quit)
	}
}

// stop ends the loop after its current request or wait.
func (e *expirer) stop() {
	close(e.quit)
	<-e.done
}

// drain sends what is queued until the site has it all or ctx ends, and returns how many
// expiries remain with the last error. Only after stop.
func (e *expirer) drain(ctx context.Context) (int, error) {
	err := e.sendAll(ctx, nil)
	if n := e.queued(); n > 0 {
		if err == nil {
			err = ctx.Err()
		}
		return n, err
	}
	return 0, nil
}

// sendAll sends requests until nothing is queued, retrying a failed one with backoff; it gives
// up (keeping the request) when stop closes or ctx ends.
func (e *expirer) sendAll(ctx context.Context, stop <-chan struct{}) error {
	failures := 0
	for {
		e.mu.Lock()
		if len(e.inflight) == 0 {
			e.take()
		}
		batch := e.inflight
		e.mu.Unlock()
		if len(batch) == 0 {
			return nil
		}
		err := e.send(ctx, batch)
		if err == nil {
			e.metrics.flushedExpire.Add(float64(len(batch)))
			e.mu.Lock()
			e.inflight = e.inflight[:0]
			e.mu.Unlock()
			failures = 0
			continue
		}
		failures++
		e.metrics.callbackErrors.Inc()
		wait := e.backoff(failures)
		glog.Errorf("gazelle: token expiry callback (%d tokens) failed, attempt %d, retrying in %s: %v",
			len(batch), failures, wait, err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// backoff returns the wait before retry n: backoffBase doubling, capped at a minute.
func (e *expirer) backoff(n int) time.Duration {
	d := e.backoffBase
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// send makes one request for the entries, succeeding only on a 200. Errors never contain the
// URL, which holds the site's password.
func (e *expirer) send(ctx context.Context, entries []tokenKey) error {
	buf := make([]byte, 0, len(e.prefix)+len(entries)*12)
	buf = append(buf, e.prefix...)
	for i, k := range entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendUint(buf, k.uid, 10)
		buf = append(buf, ':')
		buf = strconv.AppendUint(buf, k.tid, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, string(buf), nil)
	if err != nil {
		return errors.New("bad callback URL")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the site answered %s", resp.Status)
	}
	return nil
}
