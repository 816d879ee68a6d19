//go:build unix

package http

import (
	"runtime"
	"syscall"
	"time"
)

// rusage is the process's resource usage as getrusage(2) reports it, for the stats report.
type rusage struct {
	user, system      time.Duration
	maxRSS            int64 // bytes
	minFlt, majFlt    int64
	inBlock, outBlock int64
	nvcsw, nivcsw     int64
}

// readRusage reports the process's resource usage; false when it cannot be read.
func readRusage() (rusage, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return rusage{}, false
	}
	maxRSS := int64(ru.Maxrss)
	if runtime.GOOS != "darwin" && runtime.GOOS != "ios" {
		maxRSS *= 1024 // kilobytes elsewhere, bytes on Darwin
	}
	return rusage{
		user:     time.Duration(ru.Utime.Nano()),
		system:   time.Duration(ru.Stime.Nano()),
		maxRSS:   maxRSS,
		minFlt:   int64(ru.Minflt),
		majFlt:   int64(ru.Majflt),
		inBlock:  int64(ru.Inblock),
		outBlock: int64(ru.Oublock),
		nvcsw:    int64(ru.Nvcsw),
		nivcsw:   int64(ru.Nivcsw),
	}, true
}
