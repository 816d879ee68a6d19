package chihaya_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	_ "github.com/chihaya/chihaya" // registers the built-in drivers
	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// countingDriver is a backend driver that counts announces. A real driver lives in its own
// package and registers itself in init; a custom main imports it with _ and calls chihaya.Boot.
type countingDriver struct{}

type countingConn struct{ n atomic.Int64 }

func (countingDriver) New(json.RawMessage) (backend.Conn, error) { return &countingConn{}, nil }

func (c *countingConn) RecordAnnounce(context.Context, *models.AnnounceDelta) error {
	c.n.Add(1)
	return nil
}

func (c *countingConn) Close(context.Context) error { return nil }

// Example shows how a backend driver registers itself and how Chihaya opens it by the name in
// the configuration ("backend": {"driver": "counting"}).
func Example() {
	backend.Register("counting", countingDriver{})

	conn, err := backend.Open(backendConfig("counting"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = conn.RecordAnnounce(context.Background(), &models.AnnounceDelta{})
	fmt.Println(conn.(*countingConn).n.Load())

	_, err = backend.Open(backendConfig("missing"))
	fmt.Println(err)
	// Output:
	// 1
	// backend: unknown driver "missing" (forgotten import?); registered: counting, gazelle, noop
}

func backendConfig(name string) config.DriverConfig { return config.DriverConfig{Name: name} }
