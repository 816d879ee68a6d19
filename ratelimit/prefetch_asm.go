//go:build amd64 || arm64

package ratelimit

// prefetch starts loading the cache line at p and returns at once (PREFETCHT0, PRFM PLDL1KEEP).
//
//go:noescape
func prefetch(p *set)
