//go:build !linux

package loadgen

import "time"

// setTimerSlack does nothing outside Linux: the harness needs Linux (taskset, /proc) anyway.
func setTimerSlack() {}

// sleepUntil sleeps until t, or for at most chunk.
func sleepUntil(t time.Time, chunk time.Duration) {
	if d := min(time.Until(t), chunk); d > 0 {
		time.Sleep(d)
	}
}
