package ws

// WebSocket framing (RFC 6455 §5) as a server speaks it. gorilla/websocket answers the
// handshake; from then on the tracker reads and writes frames itself, so that a socket needs no
// reader of its own while it is idle (see poll_linux.go), messages are read where they lie in
// the read buffer, and every frame, control frames included, goes out through the socket's one
// write queue.

// Opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close codes the tracker sends.
const (
	closeProtocolError = 1002
	closeTooBig        = 1009
)

// maxControlPayload is the longest payload of a control frame.
const maxControlPayload = 125

// maxFrameHeader is the longest header of a frame from a client: 2 bytes, 8 of length, 4 of
// mask.
const maxFrameHeader = 14

// appendFrame appends payload as one unmasked, final frame of kind op, as a server sends them.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	b0 := 0x80 | op
	switch {
	case n < 126:
		dst = append(dst, b0, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, payload...)
}

// appendClose appends a close frame with code and no reason; code 0 sends no code.
func appendClose(dst []byte, code int) []byte {
	if code == 0 {
		return appendFrame(dst, opClose, nil)
	}
	return appendFrame(dst, opClose, []byte{byte(code >> 8), byte(code)})
}

// unmask XORs b with the client's masking key, which starts at b's first byte.
func unmask(b []byte, key [4]byte) {
	k := uint64(key[0]) | uint64(key[1])<<8 | uint64(key[2])<<16 | uint64(key[3])<<24
	k |= k << 32
	i := 0
	for ; len(b)-i >= 8; i += 8 {
		w := b[i : i+8 : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		x ^= k
		w[0], w[1], w[2], w[3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
		w[4], w[5], w[6], w[7] = byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}

// frameHeader is what a frame's header says.
type frameHeader struct {
	fin     bool
	op      byte
	key     [4]byte
	hdrLen  int    // bytes of header, mask included
	payload uint64 // bytes of payload
}

// parseHeader reads the header of a client's frame at the start of b. It returns ok false with
// no error when b holds too little of it yet, and an error close code for a frame a client must
// not send (protocol error), or a data frame that would take the message past maxMessage
// bytes, msgLen of them read already (too big).
func parseHeader(b []byte, inMessage bool, msgLen, maxMessage int64) (h frameHeader, ok bool, closeCode int) {
	if len(b) < 2 {
		return h, false, 0
	}
	b0, b1 := b[0], b[1]
	h.fin, h.op = b0&0x80 != 0, b0&0x0F
	if b0&0x70 != 0 || b1&0x80 == 0 {
		// Reserved bits (no extension is negotiated), or a frame not masked (clients must).
		return h, false, closeProtocolError
	}
	switch h.op {
	case opContinuation:
		if !inMessage {
			return h, false, closeProtocolError
		}
	case opText, opBinary:
		if inMessage {
			return h, false, closeProtocolError
		}
	case opClose, opPing, opPong:
		if !h.fin || b1&0x7F > maxControlPayload {
			return h, false, closeProtocolError
		}
	default:
		return h, false, closeProtocolError
	}
	h.hdrLen = 2
	switch n := b1 & 0x7F; n {
	case 126:
		if len(b) < 4 {
			return h, false, 0
		}
		h.payload = uint64(b[2])<<8 | uint64(b[3])
		h.hdrLen = 4
	case 127:
		if len(b) < 10 {
			return h, false, 0
		}
		for _, c := range b[2:10] {
			h.payload = h.payload<<8 | uint64(c)
		}
		if h.payload>>63 != 0 {
			return h, false, closeProtocolError
		}
		h.hdrLen = 10
	default:
		h.payload = uint64(n)
	}
	if h.op < opClose && h.payload > uint64(maxMessage-msgLen) {
		return h, false, closeTooBig
	}
	if len(b) < h.hdrLen+4 {
		return h, false, 0
	}
	copy(h.key[:], b[h.hdrLen:h.hdrLen+4])
	h.hdrLen += 4
	return h, true, 0
}

// frameReader reads a client's frames out of a buffer, and the messages they carry: it keeps
// what it has of a fragmented message between frames.
type frameReader struct {
	inMessage bool   // in a fragmented message
	frag      []byte // the fragmented message so far
}

// next reads the frame at the start of b, unmasking its payload in place. used is the bytes of
// b it took, 0 when b holds too little of the frame: need is then how many bytes it needs (at
// least; more may show when its header is whole). What the frame gives is op and payload: a
// whole message (opText or opBinary; its payload is b's or the reader's, until the next call),
// a control frame (opPing, opPong, opClose), or nothing yet (0: a fragment). code is not 0 for
// a frame refused, the close code to answer it with; nothing more is to be read then. A message
// is at most maxMessage bytes.
func (r *frameReader) next(b []byte, maxMessage int64) (used, need int, op byte, payload []byte, code int) {
	h, ok, code := parseHeader(b, r.inMessage, int64(len(r.frag)), maxMessage)
	if code != 0 {
		return 0, 0, 0, nil, code
	}
	if !ok {
		return 0, maxFrameHeader, 0, nil, 0
	}
	end := uint64(h.hdrLen) + h.payload
	if uint64(len(b)) < end {
		return 0, int(end), 0, nil, 0
	}
	payload = b[h.hdrLen:end]
	unmask(payload, h.key)
	switch h.op {
	case opText, opBinary:
		if !h.fin {
			r.inMessage = true
			r.frag = append(r.frag[:0], payload...)
			return int(end), 0, 0, nil, 0
		}
	case opContinuation:
		r.frag = append(r.frag, payload...)
		if !h.fin {
			return int(end), 0, 0, nil, 0
		}
		payload = r.frag
		r.frag, r.inMessage = nil, false
		return int(end), 0, opText, payload, 0
	}
	return int(end), 0, h.op, payload, 0
}
