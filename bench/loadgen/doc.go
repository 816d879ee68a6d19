// Package loadgen is the load generator behind bench/: it announces to and scrapes a BitTorrent
// tracker over HTTP/1.1 and UDP (BEP 15) from loopback, validates every answer, and reports
// responses per second, errors and a latency histogram.
//
// Every simulated peer has its own peer ID and its own address (source IP and port), so a tracker
// that keys peers by peer ID (Chihaya) and one that keys them by ip:port (opentracker) store the
// same number of peers. Info hashes come from a deterministic pool, so a whitelist written with
// WriteWhitelist covers every hash any workload sends.
//
// The generator is cheap on purpose: requests are written into per-connection buffers, answers
// are read into per-connection buffers and checked in place, and counters are per goroutine,
// summed once at the end. It runs on the same machine as the tracker, pinned to another core,
// so every cycle it spends is one the tracker's core does not lose but the machine does.
package loadgen
