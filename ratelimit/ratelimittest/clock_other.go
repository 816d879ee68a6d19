//go:build !linux

package ratelimittest

import "time"

// threadTime is wall time: only Linux tells a thread's CPU time here.
func threadTime() time.Duration { return wallTime() }
