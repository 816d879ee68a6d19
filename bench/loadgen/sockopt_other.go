//go:build !linux

package loadgen

import "syscall"

// bindNoPort does nothing outside Linux: the harness needs Linux (taskset, /proc) anyway.
func bindNoPort(network, address string, rc syscall.RawConn) error { return nil }
