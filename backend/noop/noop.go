// Package noop is the "noop" backend driver, for public trackers that have no site database: it
// accepts every delta and keeps nothing. Import it for its side effect of registering the driver:
//
//	import _ "github.com/chihaya/chihaya/backend/noop"
package noop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/tracker/models"
)

func init() {
	backend.Register("noop", Driver{})
}

// Driver opens noop connections.
type Driver struct{}

// New returns a Conn. The noop driver takes no params: any given are an error, so that a typo
// in a config meant for another driver is noticed.
func (Driver) New(params json.RawMessage) (backend.Conn, error) {
	p := bytes.TrimSpace(params)
	if len(p) > 0 && !bytes.Equal(p, []byte("null")) && !bytes.Equal(p, []byte("{}")) {
		return nil, fmt.Errorf("params: the noop driver takes no params, got %s", p)
	}
	return Conn{}, nil
}

// Conn discards every delta.
type Conn struct{}

// RecordAnnounce discards the delta.
func (Conn) RecordAnnounce(context.Context, *models.AnnounceDelta) error { return nil }

// DiscardsDeltas reports that nothing is kept, so the tracker need not keep peers' counters.
func (Conn) DiscardsDeltas() bool { return true }

// Close does nothing.
func (Conn) Close(context.Context) error { return nil }
