package chihaya

import (
	"fmt"
	"syscall"
)

// fileLimit is the process's open files limit (RLIMIT_NOFILE): soft, the one in force, and
// hard, the most it may be raised to.
type fileLimit struct {
	soft, hard uint64
}

// readFileLimit returns the process's open files limit.
func readFileLimit() (fileLimit, error) {
	_, l, err := getFileLimit()
	return l, err
}

// getFileLimit returns the process's open files limit as the system gives it and as a
// fileLimit (the system's field types differ: uint64 on Linux and macOS, int64 on the BSDs).
func getFileLimit() (syscall.Rlimit, fileLimit, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return rl, fileLimit{}, fmt.Errorf("read the open files limit: %w", err)
	}
	return rl, fileLimit{soft: uint64(rl.Cur), hard: uint64(rl.Max)}, nil
}

// raiseFileLimit raises the soft open files limit to the hard one, so that connections are
// bounded by max_connections rather than by a low default, and returns the limit before and
// after. (Go's runtime raises it already on start on most systems; the raise here is for those
// where it did not, and where the hard limit was raised since.) When the raise fails, after
// is what remains in force, with the error.
func raiseFileLimit() (before, after fileLimit, err error) {
	rl, before, err := getFileLimit()
	if err != nil {
		return before, before, err
	}
	if before.soft >= before.hard {
		return before, before, nil
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return before, before, fmt.Errorf("raise the open files limit from %d to %d: %w", before.soft, before.hard, err)
	}
	after, err = readFileLimit()
	return before, after, err
}
