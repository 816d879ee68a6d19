package ws

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clientFrame is a frame as a client sends it: masked with key.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = append(f, b0, 0x80|byte(n))
	case n <= 0xFFFF:
		f = append(f, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, b0, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	start := len(f)
	f = append(f, payload...)
	for i := range payload {
		f[start+i] ^= key[i&3]
	}
	return f
}

// got is what frameReader.next gave, copied.
type got struct {
	op      byte
	payload string
	code    int
}

// readAll feeds stream to a frameReader in chunks of the given sizes (the rest whole), as a
// socket's reads would bring it, keeping what a frame needs as conn.process does, and returns
// what it read.
func readAll(t *testing.T, stream []byte, chunks []int, maxMessage int64) []got {
	t.Helper()
	var r frameReader
	var events []got
	var in []byte
	feed := func(chunk []byte) bool {
		in = append(in, chunk...)
		used := 0
		for {
			n, need, op, payload, code := r.next(in[used:], maxMessage)
			require.LessOrEqual(t, n, len(in)-used)
			if code != 0 {
				events = append(events, got{code: code})
				return false
			}
			if n == 0 {
				require.Greater(t, need, len(in)-used, "a frame that needs no more than there is")
				require.LessOrEqual(t, int64(need), maxMessage+maxFrameHeader)
				break
			}
			used += n
			if op != 0 {
				events = append(events, got{op: op, payload: string(payload)})
			}
		}
		in = append(in[:0], in[used:]...)
		return true
	}
	rest := stream
	for _, n := range chunks {
		n = min(n, len(rest))
		if !feed(rest[:n]) {
			return events
		}
		rest = rest[n:]
	}
	if len(rest) > 0 {
		feed(rest)
	}
	return events
}

func TestFrameReader(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	long := bytes.Repeat([]byte("0123456789"), 7000) // 70,000 bytes: a 64-bit length
	mid := bytes.Repeat([]byte("x"), 300)            // a 16-bit length
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	tests := []struct {
		name   string
		stream []byte
		max    int64
		want   []got
	}{
		{"one text message", clientFrame(true, opText, []byte(`{"a":1}`), key), 1 << 20,
			[]got{{op: opText, payload: `{"a":1}`}}},
		{"lengths of 7, 16 and 64 bits", cat(clientFrame(true, opText, []byte("s"), key), clientFrame(true, opBinary, mid, key),
			clientFrame(true, opText, long, key)), 1 << 20,
			[]got{{op: opText, payload: "s"}, {op: opBinary, payload: string(mid)}, {op: opText, payload: string(long)}}},
		{"fragmented, with a ping inside", cat(clientFrame(false, opText, []byte("ab"), key), clientFrame(true, opPing, []byte("p"), key),
			clientFrame(false, opContinuation, []byte("cd"), key), clientFrame(true, opContinuation, []byte("ef"), key)), 1 << 20,
			[]got{{op: opPing, payload: "p"}, {op: opText, payload: "abcdef"}}},
		{"pong and close", cat(clientFrame(true, opPong, nil, key), clientFrame(true, opClose, []byte{3, 232}, key)), 1 << 20,
			[]got{{op: opPong}, {op: opClose, payload: "\x03\xe8"}}},
		{"empty message", clientFrame(true, opText, nil, key), 1 << 20, []got{{op: opText}}},
		{"at the limit", clientFrame(true, opText, mid, key), 300, []got{{op: opText, payload: string(mid)}}},
		{"past the limit", clientFrame(true, opText, mid, key), 299, []got{{code: closeTooBig}}},
		{"fragments past the limit", cat(clientFrame(false, opText, mid[:200], key), clientFrame(true, opContinuation, mid[:100], key)), 299,
			[]got{{code: closeTooBig}}},
		{"not masked", []byte{0x81, 0x01, 'a'}, 1 << 20, []got{{code: closeProtocolError}}},
		{"reserved bit", append([]byte{0xC1}, clientFrame(true, opText, []byte("a"), key)[1:]...), 1 << 20, []got{{code: closeProtocolError}}},
		{"reserved opcode", clientFrame(true, 0x3, []byte("a"), key), 1 << 20, []got{{code: closeProtocolError}}},
		{"continuation first", clientFrame(true, opContinuation, []byte("a"), key), 1 << 20, []got{{code: closeProtocolError}}},
		{"text inside a message", cat(clientFrame(false, opText, []byte("a"), key), clientFrame(true, opText, []byte("b"), key)), 1 << 20,
			[]got{{code: closeProtocolError}}},
		{"fragmented ping", clientFrame(false, opPing, nil, key), 1 << 20, []got{{code: closeProtocolError}}},
		{"long ping", clientFrame(true, opPing, mid[:126], key), 1 << 20, []got{{code: closeProtocolError}}},
		{"64-bit length with the top bit", []byte{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 1 << 20, []got{{code: closeProtocolError}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunks := range [][]int{nil, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {3, 7, 100, 4000}} {
				stream := bytes.Clone(tt.stream)
				assert.Equal(t, tt.want, readAll(t, stream, chunks, tt.max), "chunks %v", chunks)
			}
		})
	}
}

func TestUnmask(t *testing.T) {
	key := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	for n := range 40 {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte(i * 7)
		}
		masked := clientFrame(true, opText, plain, key)[6:]
		unmask(masked, key)
		assert.Equal(t, plain, masked, "%d bytes", n)
	}
}

// FuzzFrames: a client's stream, in any chunks, never panics the reader, which reads the same
// messages, control frames and refusal from it whole as in chunks, never takes more than it
// has, and never asks for more room than the largest frame allowed.
func FuzzFrames(f *testing.F) {
	key := [4]byte{9, 8, 7, 6}
	f.Add(clientFrame(true, opText, []byte(`{"action":"scrape"}`), key), uint8(1), uint8(5))
	f.Add(bytes.Join([][]byte{clientFrame(false, opText, []byte("ab"), key), clientFrame(true, opPing, []byte("p"), key),
		clientFrame(true, opContinuation, []byte("cd"), key)}, nil), uint8(3), uint8(2))
	f.Add(clientFrame(true, opBinary, bytes.Repeat([]byte("z"), 200), key), uint8(130), uint8(1))
	f.Add([]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4}, uint8(2), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint8) {
		const maxMessage = 1024
		whole := readAll(t, bytes.Clone(stream), nil, maxMessage)
		var chunks []int
		for range 64 {
			chunks = append(chunks, int(a%17)+1, int(b%29)+1)
		}
		assert.Equal(t, whole, readAll(t, bytes.Clone(stream), chunks, maxMessage))
	})
}
