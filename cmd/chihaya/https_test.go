package main

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

// TestHTTPSCertificateSIGHUP runs the binary with tls_addr and renews its certificate: SIGHUP
// and a change of the files each put the new one in service for new connections while an old
// connection keeps being answered; a bad renewal is logged and the old certificate stays; a
// certificate that does not load at start stops the binary with the file named.
func TestHTTPSCertificateSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := boundedContext(t, operatorTimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	s := &swarm{t: t, root: t.TempDir()}
	ca := tlscerttest.NewCA(t)
	certDir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, certDir, 100)
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	tr := startConfigured(ctx, s, bin, "tracker", map[string]any{
		"tls_addr": tlsAddr, "tls_cert_file": certFile, "tls_key_file": keyFile,
	})
	waitLog(ctx, s, tr.proc, "HTTPS on "+tlsAddr)

	dialSerial := func() (*tls.Conn, int64) {
		t.Helper()
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", tlsAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
		return c, c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	announce := func(c *tls.Conn) {
		t.Helper()
		_, err := io.WriteString(c, "GET /announce?info_hash=sighupsighupsighup!!&peer_id=-TL0001-000000000001&port=7000&uploaded=0&downloaded=0&left=0 HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		require.NoError(t, err)
		assert.Contains(t, string(buf[:n]), "8:intervali1800e")
	}
	old, serial := dialSerial()
	defer old.Close()
	require.Equal(t, int64(100), serial)
	announce(old)

	ca.IssueFiles(t, certDir, 101)
	require.NoError(t, tr.proc.cmd.Process.Signal(syscall.SIGHUP))
	s.waitFor(ctx, "serial 101 on a new connection", func() (bool, string, error) {
		c, serial := dialSerial()
		_ = c.Close()
		return serial == 101, "serial " + strconv.FormatInt(serial, 10), nil
	})
	announce(old)

	// A bad renewal, written in place: logged, the old certificate stays.
	require.NoError(t, os.WriteFile(certFile, []byte("garbage"), 0o600))
	require.NoError(t, tr.proc.cmd.Process.Signal(syscall.SIGHUP))
	waitLog(ctx, s, tr.proc, "the certificate in service stays")
	c, serial := dialSerial()
	_ = c.Close()
	assert.Equal(t, int64(101), serial)
	announce(old)

	tr.proc.stop()
	assert.NoError(t, tr.proc.err)

	// At start, a certificate that does not load stops the binary, the file named.
	bad := &swarm{t: t, root: t.TempDir()}
	cfgPath := filepath.Join(bad.root, "bad.json")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"addr": "", "tls_addr": "`+tlsAddr+`", "tls_cert_file": "`+certFile+`", "tls_key_file": "`+keyFile+`"}`), 0o600))
	p := bad.start(ctx, "bad", bad.root, nil, bin, "-config", cfgPath)
	select {
	case <-p.done:
	case <-ctx.Done():
		t.Fatal("the binary did not stop on a bad certificate")
	}
	require.Error(t, p.err)
	b, err := os.ReadFile(p.log)
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(b), "tls_cert_file "+certFile), "the log names the file: %s", b)
}
