package loadgen

import (
	"syscall"
	"time"
)

// prSetTimerSlack is PR_SET_TIMERSLACK, which the syscall package does not name.
const prSetTimerSlack = 29

// setTimerSlack lowers the calling thread's timer slack from the default 50 µs to 1 µs, so that
// its nanosleeps end on time. Call it on a locked thread.
func setTimerSlack() { _, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0) }

// sleepUntil sleeps until t, or for at most chunk, in nanosleep: the Go runtime's timers wake
// a sleeper up to a millisecond late when nothing else runs, which an open-loop sender at tens
// of thousands of requests a second cannot afford.
func sleepUntil(t time.Time, chunk time.Duration) {
	d := min(time.Until(t), chunk)
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
