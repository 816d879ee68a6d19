//go:build !unix

package http

import "time"

// rusage is the process's resource usage, which this OS does not report the Unix way.
type rusage struct {
	user, system      time.Duration
	maxRSS            int64
	minFlt, majFlt    int64
	inBlock, outBlock int64
	nvcsw, nivcsw     int64
}

// readRusage reports false: the stats report leaves the resource usage labels out.
func readRusage() (rusage, bool) { return rusage{}, false }
