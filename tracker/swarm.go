package tracker

import (
	"context"
	"errors"
	"fmt"

	"github.com/chihaya/chihaya/tracker/models"
)

// SwarmCounter is an optional capability of a Conn: reporting the sizes of all swarms, for
// metrics. Sizes read from storage stay true across reaping and restarts, where sizes counted
// from events would drift.
type SwarmCounter interface {
	SwarmCounts(ctx context.Context) (models.SwarmCounts, error)
}

// ErrNotSupported is returned for an optional capability the driver lacks.
var ErrNotSupported = errors.New("tracker: not supported by the driver")

// SwarmCounts returns the sizes of all swarms, or ErrNotSupported when the driver cannot tell.
func (t *Tracker) SwarmCounts(ctx context.Context) (models.SwarmCounts, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return models.SwarmCounts{}, fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	sc, ok := conn.(SwarmCounter)
	if !ok {
		return models.SwarmCounts{}, ErrNotSupported
	}
	counts, err := sc.SwarmCounts(ctx)
	if err != nil {
		return counts, fmt.Errorf("tracker: swarm counts: %w", err)
	}
	return counts, nil
}
