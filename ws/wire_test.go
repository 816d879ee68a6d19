package ws_test

// Tests of the framing the tracker does itself after gorilla/websocket's handshake, with
// frames built byte by byte on a raw socket: over plain TCP (a socket the poller reads) and
// over TLS (a socket read on a goroutine of its own).

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

// transport is a way to reach the tracker: its WebSocket scheme and how to dial a raw socket.
type transport struct {
	name   string
	url    string // ws://host:port or wss://host:port
	dial   func(t *testing.T) net.Conn
	dialer *websocket.Dialer
}

// transports starts a tracker serving both plain HTTP and HTTPS, and returns the two ways in.
func transports(t *testing.T, mod func(*config.Config)) (*chihaya.Chihaya, []transport) {
	t.Helper()
	ca := tlscerttest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), 1)
	c := startTracker(t, func(cfg *config.Config) {
		cfg.TLSAddr = "127.0.0.1:0"
		cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		if mod != nil {
			mod(cfg)
		}
	})
	tlsCfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	plain := transport{name: "ws", url: "ws://" + c.Addr().String(), dialer: websocket.DefaultDialer,
		dial: func(t *testing.T) net.Conn {
			nc, err := net.DialTimeout("tcp", c.Addr().String(), 5*time.Second)
			require.NoError(t, err)
			return nc
		}}
	secure := transport{name: "wss", url: "wss://" + c.TLSAddr().String(),
		dialer: &websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 5 * time.Second},
		dial: func(t *testing.T) net.Conn {
			nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.TLSAddr().String(), tlsCfg)
			require.NoError(t, err)
			return nc
		}}
	return c, []transport{plain, secure}
}

// rawClient speaks WebSocket frames by hand.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialRaw opens a socket and does the handshake.
func (tr transport) dialRaw(t *testing.T) *rawClient {
	t.Helper()
	nc := tr.dial(t)
	t.Cleanup(func() { _ = nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := io.WriteString(nc, "GET /announce HTTP/1.1\r\nHost: tracker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return &rawClient{t: t, nc: nc, br: br}
}

// frame builds a client's frame, masked.
func frame(fin bool, op byte, payload string) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	var f []byte
	if n := len(payload); n < 126 {
		f = append(f, b0, 0x80|byte(n))
	} else {
		f = append(f, b0, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i&3])
	}
	return f
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	_, err := rc.nc.Write(b)
	require.NoError(rc.t, err)
}

// next reads the server's next frame, which must be final and unmasked.
func (rc *rawClient) next() (byte, []byte) {
	rc.t.Helper()
	var h [2]byte
	_, err := io.ReadFull(rc.br, h[:])
	require.NoError(rc.t, err)
	require.Equal(rc.t, byte(0x80), h[0]&0xF0, "a server frame is final, with no reserved bit")
	require.Zero(rc.t, h[1]&0x80, "a server frame is not masked")
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(rc.br, l[:])
		n = int(l[0])<<8 | int(l[1])
	case 127:
		var l [8]byte
		_, err = io.ReadFull(rc.br, l[:])
		n = 0
		for _, c := range l {
			n = n<<8 | int(c)
		}
	}
	require.NoError(rc.t, err)
	p := make([]byte, n)
	_, err = io.ReadFull(rc.br, p)
	require.NoError(rc.t, err)
	return h[0] & 0x0F, p
}

// message reads the next frame, which must be a text message, as JSON.
func (rc *rawClient) message() map[string]any {
	rc.t.Helper()
	op, p := rc.next()
	require.Equal(rc.t, byte(0x1), op, "%q", p)
	var m map[string]any
	require.NoError(rc.t, json.Unmarshal(p, &m), "%s", p)
	return m
}

// closed reads the server's close frame, whose code it returns, and the end of the socket.
func (rc *rawClient) closed() int {
	rc.t.Helper()
	op, p := rc.next()
	require.Equal(rc.t, byte(0x8), op, "%q", p)
	require.Len(rc.t, p, 2)
	_, err := rc.br.ReadByte()
	require.ErrorIs(rc.t, err, io.EOF, "the socket stays open after the close frame")
	return int(p[0])<<8 | int(p[1])
}

func scrapeOf(ih string) string {
	b, _ := json.Marshal(map[string]any{"action": "scrape", "info_hash": ih})
	return string(b)
}

func TestWire(t *testing.T) {
	_, trs := transports(t, nil)
	ih := bin("wire", 1)
	scrape := scrapeOf(ih)
	for _, tr := range trs {
		t.Run(tr.name, func(t *testing.T) {
			t.Run("two messages in one write", func(t *testing.T) {
				rc := tr.dialRaw(t)
				rc.write(append(frame(true, 0x1, scrape), frame(true, 0x1, scrape)...))
				assert.Equal(t, "scrape", rc.message()["action"])
				assert.Equal(t, "scrape", rc.message()["action"])
			})
			t.Run("one message a byte a write", func(t *testing.T) {
				rc := tr.dialRaw(t)
				for _, c := range frame(true, 0x1, scrape) {
					rc.write([]byte{c})
				}
				assert.Equal(t, "scrape", rc.message()["action"])
			})
			t.Run("fragmented, with a ping inside", func(t *testing.T) {
				rc := tr.dialRaw(t)
				half := len(scrape) / 2
				rc.write(frame(false, 0x1, scrape[:half]))
				rc.write(frame(true, 0x9, "are you there"))
				rc.write(frame(true, 0x0, scrape[half:]))
				op, p := rc.next()
				assert.Equal(t, byte(0xA), op)
				assert.Equal(t, "are you there", string(p))
				assert.Equal(t, "scrape", rc.message()["action"])
			})
			t.Run("a message of 16-bit length", func(t *testing.T) {
				rc := tr.dialRaw(t)
				msg := `{"action":"scrape","info_hash":` + strings.Repeat(" ", 300) + `"` + strings.Repeat("x", 20) + `"}`
				rc.write(frame(true, 0x1, msg))
				assert.Contains(t, rc.message()["files"], strings.Repeat("x", 20))
			})
			t.Run("close", func(t *testing.T) {
				rc := tr.dialRaw(t)
				rc.write(frame(true, 0x8, "\x03\xe8bye"))
				assert.Equal(t, 1000, rc.closed())
			})
			t.Run("not masked", func(t *testing.T) {
				rc := tr.dialRaw(t)
				rc.write([]byte{0x81, byte(len(scrape))})
				rc.write([]byte(scrape))
				assert.Equal(t, 1002, rc.closed())
			})
			t.Run("reserved opcode", func(t *testing.T) {
				rc := tr.dialRaw(t)
				rc.write(frame(true, 0x3, "x"))
				assert.Equal(t, 1002, rc.closed())
			})
			t.Run("too large", func(t *testing.T) {
				rc := tr.dialRaw(t)
				// Only the header: the tracker refuses the frame before it comes.
				rc.write([]byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4})
				assert.Equal(t, 1009, rc.closed())
			})
		})
	}
}

// TestOverTLS: a socket read on a goroutine of its own (wss) and a polled one (ws) relay offers
// and answers to each other, are pinged, and leave their swarm when they close.
func TestOverTLS(t *testing.T) {
	c, trs := transports(t, func(cfg *config.Config) {
		cfg.WSPingInterval = config.Duration{Duration: time.Second}
		cfg.WSIdleTimeout = config.Duration{Duration: time.Minute}
	})
	ih := bin("tls", 1)
	var cls []*client
	pinged := make([]chan struct{}, len(trs))
	for i, tr := range trs {
		conn, _, err := tr.dialer.Dial(tr.url+"/announce", nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		pinged[i] = make(chan struct{}, 1)
		conn.SetPingHandler(func(data string) error {
			select {
			case pinged[i] <- struct{}{}:
			default:
			}
			return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		cl := &client{t: t, ws: conn}
		cl.send(announce(ih, bin(tr.name, 1), "started", 10))
		require.Equal(t, float64(i+1), cl.read()["incomplete"])
		cls = append(cls, cl)
	}
	plain, secure := cls[0], cls[1]
	msg := announce(ih, bin("wss", 1), "", 10)
	msg["offers"] = offers(1, "tls")
	secure.send(msg)
	assert.Equal(t, float64(2), secure.read()["incomplete"])
	offer := plain.read()
	assert.Equal(t, bin("wss", 1), offer["peer_id"])
	plain.send(map[string]any{"action": "announce", "info_hash": ih, "peer_id": bin("ws", 1), "to_peer_id": bin("wss", 1),
		"answer": map[string]any{"type": "answer", "sdp": "v=0 tls"}, "offer_id": offer["offer_id"]})
	answer := secure.read()
	assert.Equal(t, map[string]any{"type": "answer", "sdp": "v=0 tls"}, answer["answer"])
	assert.Equal(t, 1.0, metric(t, c, "chihaya_ws_connections_polled"), "the plain socket is polled, the TLS one not")
	assert.Equal(t, 2.0, metric(t, c, "chihaya_ws_connections_open"))
	for i, cl := range cls {
		// The pings come while the client reads.
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = cl.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, _ = cl.ws.ReadMessage()
		}()
		select {
		case <-pinged[i]:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: no ping", trs[i].name)
		}
		_ = cl.ws.Close()
		<-done
	}
	watcher := dial(t, c, "/announce")
	deadline := time.Now().Add(5 * time.Second)
	for watcher.barrier(ih)["incomplete"] != float64(0) {
		require.True(t, time.Now().Before(deadline), "the closed sockets' peers are still in the swarm")
	}
}
