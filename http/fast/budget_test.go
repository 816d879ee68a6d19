package fast

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Loopback tests of the connection budget: a real server, clients on 127.0.0.1 (the flood) and
// 127.0.0.2 (everyone else).

// acceptLoops are the two ways Serve accepts: the raw loop (Linux) and the net.Listener loop.
func acceptLoops(t *testing.T) map[string]func(net.Listener) net.Listener {
	t.Helper()
	return map[string]func(net.Listener) net.Listener{
		"raw accept":   func(ln net.Listener) net.Listener { return ln },
		"net.Listener": func(ln net.Listener) net.Listener { return plainListener{ln} },
	}
}

// budgetClient is one keep-alive connection from a given loopback address.
type budgetClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialFrom(t *testing.T, local, addr string) *budgetClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	t.Cleanup(func() { _ = c.Close() })
	return &budgetClient{c: c, br: bufio.NewReader(c)}
}

// announce sends one keep-alive announce and reads its answer.
func (bc *budgetClient) announce(port int) error {
	if _, err := io.WriteString(bc.c, announceReq("HTTP/1.1", "", port, "Host: x\r\n")); err != nil {
		return err
	}
	res, err := nethttp.ReadResponse(bc.br, nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != nethttp.StatusOK || !strings.HasPrefix(string(b), "route=announce\n") {
		return fmt.Errorf("answer %d %q", res.StatusCode, b)
	}
	return nil
}

// closed reports whether the server closed the connection, without waiting: it peeks at the
// socket for the end of the stream.
func (bc *budgetClient) closed() bool {
	if bc.br.Buffered() > 0 {
		return false
	}
	rc, err := bc.c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	return n == 0 && rerr == nil || errors.Is(rerr, syscall.ECONNRESET)
}

// countClosed waits until want of conns were closed by the server, or 5 s pass, and returns
// which are.
func countClosed(t *testing.T, conns []*budgetClient, want int) []bool {
	t.Helper()
	var closed []bool
	eventually(t, 5*time.Second, fmt.Sprintf("%d connections closed by the server", want), func() bool {
		closed = closed[:0]
		n := 0
		for _, bc := range conns {
			c := bc.closed()
			closed = append(closed, c)
			if c {
				n++
			}
		}
		return n >= want
	})
	return closed
}

// openConns is how many connections the server counts.
func openConns(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.table.open
}

// settle waits until every connection the server counts is idle, none still closing: the
// order connections went idle in is then the order the clients were answered in.
func settle(t *testing.T, s *Server) {
	t.Helper()
	eventually(t, 5*time.Second, "the server's connections are all idle", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.table.shedding == 0 && s.table.waiting(tierIdle) == s.table.open
	})
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func metric(t *testing.T, s *Server, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range s.Collectors() {
		require.NoError(t, reg.Register(c))
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

// TestBudgetIdleFlood: one address holds twice the budget's worth of idle keep-alive
// connections; another address is still answered at once, the flood's oldest connections are
// the ones closed, and nothing is logged.
func TestBudgetIdleFlood(t *testing.T) {
	const budget, flood = 32, 64
	for name, wrap := range acceptLoops(t) {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, func(cfg *Config) { cfg.MaxConnections = budget })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := serveListener(t, s, wrap(ln)).String()

			var held []*budgetClient
			for i := range flood {
				bc := dialFrom(t, "127.0.0.1", addr)
				require.NoError(t, bc.announce(10000+i), "flood connection %d", i)
				held = append(held, bc)
				settle(t, s)
			}
			eventually(t, 5*time.Second, "the server holds no more than its budget", func() bool { return openConns(s) <= budget })

			for i := range 5 {
				start := time.Now()
				other := dialFrom(t, "127.0.0.2", addr)
				require.NoError(t, other.announce(20000+i))
				assert.Less(t, time.Since(start), time.Second, "another address is answered at once")
			}
			// The flood's oldest connections went first: those still open are its newest.
			closed := 0
			// The other address's five connections, newer than all of the flood's, each cost the
			// flood one more.
			for i, c := range countClosed(t, held, flood+5-budget) {
				if c {
					closed++
					continue
				}
				assert.GreaterOrEqual(t, i, flood+5-budget, "connection %d of the flood is open, newer ones were closed", i)
			}
			assert.Equal(t, flood+5-budget, closed)
			assert.LessOrEqual(t, openConns(s), budget)
			assert.Equal(t, float64(budget), metric(t, s, "chihaya_http_connections_max"))
			assert.GreaterOrEqual(t, metric(t, s, "chihaya_http_connections_shed_total", "reason", "max_connections", "state", "idle"), float64(flood-budget))
			assert.Zero(t, metric(t, s, "chihaya_http_connections_refused_total", "reason", "max_connections"))
			assert.Zero(t, metric(t, s, "chihaya_http_accept_errors_total"))
			t.Logf("flood of %d idle connections against a budget of %d: %d closed by the server", flood, budget, closed)
		})
	}
}

// TestBudgetPerAddress: an address over max_connections_per_ip loses its own oldest idle
// connections, and another address's idle ones, older still, stay open.
func TestBudgetPerAddress(t *testing.T) {
	const perIP = 8
	for name, wrap := range acceptLoops(t) {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, func(cfg *Config) {
				cfg.MaxConnections = 100
				cfg.MaxConnectionsPerIP = perIP
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := serveListener(t, s, wrap(ln)).String()

			var others []*budgetClient
			for i := range 3 {
				bc := dialFrom(t, "127.0.0.2", addr)
				require.NoError(t, bc.announce(30000+i))
				others = append(others, bc)
				settle(t, s)
			}
			var flood []*budgetClient
			for i := range 3 * perIP {
				bc := dialFrom(t, "127.0.0.1", addr)
				require.NoError(t, bc.announce(31000+i))
				flood = append(flood, bc)
				settle(t, s)
			}
			eventually(t, 5*time.Second, "the flooding address holds no more than its cap", func() bool { return openConns(s) <= perIP+len(others) })
			for i, c := range countClosed(t, flood, 2*perIP) {
				assert.Equal(t, i < 2*perIP, c, "flood connection %d: only the newest %d stay open", i, perIP)
			}
			for i, bc := range others {
				require.NoError(t, bc.announce(32000+i), "the other address's idle connection %d still serves", i)
			}
			assert.Equal(t, float64(2*perIP), metric(t, s, "chihaya_http_connections_shed_total", "reason", "max_connections_per_ip", "state", "idle"))
			assert.Zero(t, metric(t, s, "chihaya_http_connections_shed_total", "reason", "max_connections", "state", "idle"))
		})
	}
}

// TestBudgetSlowloris: 2000 connections send half a head and stop. Another address is answered
// throughout, read_header_timeout closes them all, and a head longer than 16 KiB is refused.
func TestBudgetSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2000 connections")
	}
	const loris, budget = 2000, 1500
	s := newTestServer(t, func(cfg *Config) {
		cfg.MaxConnections = budget
		cfg.MaxConnectionsPerIP = 0
		cfg.ReadHeaderTimeout = 2 * time.Second
	})
	addr := serveLoopback(t, s, "tcp", "127.0.0.1:0").String()

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   []net.Conn
		dialErr error
	)
	half := "GET /announce?" + announceQ(7000) + " HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
			for range loris / 8 {
				c, err := d.Dial("tcp", addr)
				if err == nil {
					_, err = io.WriteString(c, half)
				}
				mu.Lock()
				if err != nil {
					dialErr = fmt.Errorf("worker %d: %w", w, err)
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	// While they connect, another address is answered, each time within a second.
	var slowest time.Duration
	for i := range 20 {
		start := time.Now()
		other := dialFrom(t, "127.0.0.2", addr)
		require.NoError(t, other.announce(21000+i))
		slowest = max(slowest, time.Since(start))
		_ = other.c.Close()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	require.NoError(t, dialErr)
	require.Len(t, conns, loris)
	start := time.Now()
	other := dialFrom(t, "127.0.0.2", addr)
	require.NoError(t, other.announce(22000))
	slowest = max(slowest, time.Since(start))
	assert.Less(t, slowest, time.Second, "another address is answered during the slowloris")
	assert.LessOrEqual(t, openConns(s), budget+s.table.slack, "the budget holds")

	// A head over the limit is refused, as before.
	big := dialFrom(t, "127.0.0.2", addr)
	_, err := io.WriteString(big.c, "GET /announce HTTP/1.1\r\nX: "+strings.Repeat("a", MaxHeadBytes))
	require.NoError(t, err)
	res, err := nethttp.ReadResponse(big.br, nil)
	require.NoError(t, err)
	assert.Equal(t, nethttp.StatusRequestHeaderFieldsTooLarge, res.StatusCode)

	// read_header_timeout closes every half-sent head.
	eventually(t, 10*time.Second, "the half-sent heads are closed", func() bool { return openConns(s) <= 1 })
	t.Logf("slowloris of %d half-sent heads against a budget of %d: slowest other announce %v, shed %v", loris, budget,
		slowest, metric(t, s, "chihaya_http_connections_shed_total", "reason", "max_connections", "state", "head"))
}

// TestBudgetDeferAccept: connections that send nothing are not accepted (TCP_DEFER_ACCEPT, on
// the plain listener and on the TLS one), so they take next to nothing from the budget.
func TestBudgetDeferAccept(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_DEFER_ACCEPT is Linux only")
	}
	tlsCfg := testTLSConfig(t)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{name: "plain"}, {name: "TLS", tls: true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, func(cfg *Config) { cfg.ReadHeaderTimeout = 5 * time.Second })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			var addr string
			if tc.tls {
				addr = serveTLSListener(t, s, ln, tlsCfg).String()
			} else {
				addr = serveListener(t, s, ln).String()
			}
			const silent = 200
			for range silent {
				dialFrom(t, "127.0.0.1", addr)
			}
			other := dialFrom(t, "127.0.0.2", addr)
			if tc.tls {
				tc := tls.Client(other.c, &tls.Config{RootCAs: testCA.Pool(), ServerName: "localhost"})
				require.NoError(t, tc.Handshake())
				other = &budgetClient{c: tc, br: bufio.NewReader(tc)}
			}
			require.NoError(t, other.announce(23000))
			// The kernel lets the odd one through (a retransmitted ACK, say): a handful at most.
			n := openConns(s)
			assert.LessOrEqual(t, n, 1+silent/20, "connections that sent nothing are not accepted")
			t.Logf("%d silent connections: %d accepted", silent, n-1)
		})
	}
}

func TestConnCollector(t *testing.T) {
	s := newTestServer(t, func(cfg *Config) {
		cfg.MaxConnections = 7
		cfg.MaxConnectionsPerIP = 3
	})
	reg := prometheus.NewPedanticRegistry()
	for _, c := range s.Collectors() {
		require.NoError(t, reg.Register(c))
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	assert.Equal(t, 4+2+3*2+1+1, n, "gauges, refused by 2 reasons, shed by 3 reasons and 2 states, accept errors, TLS handshake errors")
	assert.Equal(t, float64(7), metric(t, s, "chihaya_http_connections_max"))
	assert.Equal(t, float64(3), metric(t, s, "chihaya_http_connections_per_ip_max"))
	assert.Zero(t, metric(t, s, "chihaya_http_connections_open"))
}
