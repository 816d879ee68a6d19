package fast

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRequestContext(t *testing.T) {
	base := context.WithValue(context.Background(), ctxKey{}, "v")
	c := NewRequestContext(base, 50*time.Millisecond)
	for i := range 2 {
		start := time.Now()
		c.Begin(start)
		d, ok := c.Deadline()
		require.True(t, ok)
		assert.Equal(t, start.Add(50*time.Millisecond), d)
		assert.Equal(t, "v", c.Value(ctxKey{}))
		assert.NoError(t, c.Err())
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d: Done never closed", i)
		}
		assert.True(t, errors.Is(c.Err(), context.DeadlineExceeded))
		c.End()
		assert.NoError(t, c.Err(), "the next request starts afresh")
	}

	c.Begin(time.Now())
	c.Cancel()
	<-c.Done()
	assert.ErrorIs(t, c.Err(), context.Canceled)
	c.End()

	c.Begin(time.Now())
	c.End()
	c.Cancel() // outside a request: nothing to cancel
	assert.NoError(t, c.Err())

	none := NewRequestContext(base, 0)
	_, ok := none.Deadline()
	assert.False(t, ok, "request_timeout 0 has no deadline")
}

type ctxKey struct{}
