package fast

import (
	"context"
	"sync"
	"time"
)

// RequestContext is the context of the fast path's requests: one per connection, reused by each of its
// requests in turn, so that request_timeout costs a timer reset rather than the timer, the
// cancelCtx and the goroutine-free propagation that context.WithTimeout allocates per request.
//
// Between Begin and End it behaves as context.WithTimeout(base, timeout) would: Deadline
// reports the deadline, and Done closes (Err turns to context.DeadlineExceeded) when the
// deadline passes, or (Err turns to context.Canceled) when Cancel is called because Shutdown
// gave up waiting. Values come from base. A driver must not keep it past the call it was given
// to, which the tracker.Conn contract already forbids for everything of a request.
type RequestContext struct {
	base    context.Context
	timeout time.Duration

	timer *time.Timer

	mu       sync.Mutex
	deadline time.Time
	done     chan struct{}
	err      error
	// live is set between begin and end; the timer fires for nothing outside it.
	live bool
}

// NewRequestContext returns the context of one connection's requests, each bounded by timeout
// (request_timeout; 0 is none), under base.
func NewRequestContext(base context.Context, timeout time.Duration) *RequestContext {
	c := &RequestContext{base: base, timeout: timeout, done: make(chan struct{})}
	if timeout > 0 {
		c.timer = time.AfterFunc(time.Hour, c.expire)
		c.timer.Stop()
	}
	return c
}

// Begin starts a request at now.
func (c *RequestContext) Begin(now time.Time) {
	c.mu.Lock()
	c.live = true
	if c.timer != nil {
		c.deadline = now.Add(c.timeout)
	}
	c.mu.Unlock()
	if c.timer != nil {
		c.timer.Reset(c.timeout)
	}
}

// End finishes the request; a context whose Done was closed gets a new channel for the next.
func (c *RequestContext) End() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Lock()
	c.live = false
	if c.err != nil {
		c.err = nil
		c.done = make(chan struct{})
	}
	c.mu.Unlock()
}

// expire is the timer's function. A timer of an earlier request that fired as it ended may run
// late, during a later request: the deadline check tells it apart.
func (c *RequestContext) expire() { c.stop(context.DeadlineExceeded, true) }

// Cancel ends the request in flight, if any, with context.Canceled.
func (c *RequestContext) Cancel() { c.stop(context.Canceled, false) }

func (c *RequestContext) stop(err error, timer bool) {
	c.mu.Lock()
	if c.live && c.err == nil && (!timer || !time.Now().Before(c.deadline)) {
		c.err = err
		close(c.done)
	}
	c.mu.Unlock()
}

// Deadline reports the request's deadline, when request_timeout is set.
func (c *RequestContext) Deadline() (time.Time, bool) {
	if c.timer == nil {
		return time.Time{}, false
	}
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	return d, true
}

// Done is closed when the request times out or is cancelled.
func (c *RequestContext) Done() <-chan struct{} {
	c.mu.Lock()
	d := c.done
	c.mu.Unlock()
	return d
}

// Err reports why Done was closed, or nil.
func (c *RequestContext) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	return err
}

// Value returns base's value for key.
func (c *RequestContext) Value(key any) any { return c.base.Value(key) }
