//go:build !linux

package udp

import "net"

// newBatchIO returns nil where recvmmsg and sendmmsg are not available: readers then move one
// datagram per system call.
func newBatchIO(*net.UDPConn, []slot) (packetIO, error) { return nil, nil }
