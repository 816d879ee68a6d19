//go:build !amd64 && !arm64

package ratelimit

// prefetch does nothing where the package has no instruction for it.
func prefetch(*set) {}
