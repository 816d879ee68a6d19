package fast

import (
	"io"
	"net"
	nethttp "net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// taken is what the upgrade handler of TestTakeDescriptor got.
type taken struct {
	nc  net.Conn
	fd  int
	err error
}

// TestTakeDescriptor: a connection upgraded and hijacked gives its socket's descriptor away: the
// socket works through it, and the connection stays counted in the budget until it is closed.
func TestTakeDescriptor(t *testing.T) {
	for name, wrap := range acceptLoops(t) {
		t.Run(name, func(t *testing.T) {
			got := make(chan taken, 1)
			upgrade := nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
				nc, _, err := w.(nethttp.Hijacker).Hijack()
				if err != nil {
					got <- taken{err: err}
					return
				}
				td, ok := nc.(interface{ TakeDescriptor() (int, error) })
				if !ok {
					got <- taken{nc: nc, err: errNoDescriptor}
					return
				}
				fd, err := td.TakeDescriptor()
				got <- taken{nc: nc, fd: fd, err: err}
			})
			s, err := New(testConfig(), echoHandler{}, upgrade)
			require.NoError(t, err)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := serveListener(t, s, wrap(ln))
			bc := dialFrom(t, "127.0.0.2", addr.String())
			_, err = io.WriteString(bc.c, "GET /announce HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
			require.NoError(t, err)
			var tk taken
			select {
			case tk = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the upgrade never reached the handler")
			}
			require.NoError(t, tk.err)
			defer syscall.Close(tk.fd)

			// The descriptor is the socket's, both ways, and the connection no longer has one.
			n, err := syscall.Write(tk.fd, []byte("from the taker"))
			require.NoError(t, err)
			require.Equal(t, 14, n)
			buf := make([]byte, 14)
			_, err = io.ReadFull(bc.br, buf)
			require.NoError(t, err)
			assert.Equal(t, "from the taker", string(buf))
			_, err = io.WriteString(bc.c, "from the client")
			require.NoError(t, err)
			var read []byte
			eventually(t, 5*time.Second, "the client's bytes reach the descriptor", func() bool {
				b := make([]byte, 64)
				n, err := syscall.Read(tk.fd, b)
				if n > 0 {
					read = append(read, b[:n]...)
				}
				return err == nil && string(read) == "from the client"
			})
			_, err = tk.nc.Write([]byte("x"))
			assert.ErrorIs(t, err, net.ErrClosed)

			assert.Equal(t, 1, openConns(s), "the taken connection is counted")
			require.NoError(t, tk.nc.Close())
			eventually(t, 5*time.Second, "the closed connection is uncounted", func() bool { return openConns(s) == 0 })
		})
	}
}
