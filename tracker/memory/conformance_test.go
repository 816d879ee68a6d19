package memory

import (
	"testing"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

func TestConformance(t *testing.T) {
	trackertest.Run(t, func(*testing.T) tracker.Pool { return NewPool(8) })
}
