// Package stats aggregates what the tracker does into metrics, served as JSON at /stats and in
// the Prometheus text format at /metrics.
//
// Frontends hand it one Request per answered request with Record, which never blocks: events go
// over a buffered channel to one aggregating goroutine (Run), and when the buffer is full the
// event is dropped and the drop is counted. Swarm sizes are not counted from events at all: they
// are read from the tracker driver when a client asks, so they stay true across reaping, stopped
// events and client restarts.
package stats
